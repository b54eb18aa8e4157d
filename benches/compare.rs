//! brook beside its peers and the machine's limits, in one run: the table
//! of issue 7.
//!
//! Peers, on the same workload, same disk, same run: the `commitlog`
//! crate (an embedded commit log: one `write()` per append) and `redb` (a
//! B-tree store used as an event log, key = offset, what many Rust users
//! reach for instead). Limits, measured here: sequential `write()` of
//! 1 MiB chunks into the page cache, `memcpy` bandwidth, CRC-32C
//! bandwidth, `fdatasync` latency.
//!
//! Records are a 16-byte key and a 100-byte value, one partition,
//! `SyncPolicy::Never` unless the workload says otherwise. Each throughput
//! figure is the median of three timed runs after an untimed warm-up (this
//! VM is slow to hand out page-cache memory that sat idle; every timed run
//! of rows 1–3 and of the `write()` limit also starts right after writing
//! and deleting a file as large as its data, see [`prime_memory`]). Rows 1–3 run
//! brook and the figures it is held against (commitlog; for row 2 both
//! ways and `write()` of as many bytes as brook stored; `write()` for 1 MiB
//! values) alternately, five rounds after a warm-up
//! of each, and report the median of the rounds' ratios: the VM's speed
//! drifts within seconds, and
//! a ratio of two medians taken a minute apart carried that drift. Row 5
//! runs its 1, 4 and 16 durable threads in turn, three rounds of a third
//! of the time each, and reports the median rate and the median of the
//! rounds' ratios to one thread (the disk's fsyncs drift too). Every
//! log is written into a fresh temporary directory, removed afterwards.
//!
//! ```text
//! cargo bench --bench compare              # default size, about 5 minutes
//! cargo bench --bench compare -- --full    # issue 7's full sizes (10 GB; ~30 min, 25 GB of disk)
//! cargo bench --bench compare -- --quick   # a smoke run at 1/100 size (checks, not figures)
//! cargo bench --bench compare -- --only=2,5  # some workloads (9: the plot)
//! ```
//!
//! It prints a Markdown table (also written to
//! `target/compare/results.md`) and draws throughput by record size for
//! brook and its peers into `target/compare/throughput_by_size.svg`
//! (`--docs` also copies both into `docs/`).

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brook::{ConsumerConfig, Log, LogConfig, OffsetReset, Record, SyncPolicy, TopicConfig};
use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

const KEY: usize = 16;
const VALUE: usize = 100;
const BATCH: usize = 1000;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Set in the child process of the crash-recovery workload.
const CHILD_ENV: &str = "BROOK_COMPARE_CHILD_DIR";

/// How much each workload moves.
struct Size {
    full: bool,
    single: u64,
    single_redb: u64,
    batched: u64,
    big_bytes: u64,
    read: u64,
    durable: Duration,
    partitions: u32,
    per_partition: u64,
    open_bytes: u64,
    open_segment: u64,
    latency_samples: usize,
    memory_bytes: u64,
    by_size_bytes: u64,
}

impl Size {
    /// A smoke run (`--quick`): every workload at a hundredth of its size,
    /// to check the program, not to quote.
    fn quick() -> Size {
        Size {
            full: false,
            single: 20_000,
            single_redb: 200,
            batched: 50_000,
            big_bytes: 16 * MIB,
            read: 20_000,
            durable: Duration::from_millis(200),
            partitions: 100,
            per_partition: 100,
            open_bytes: 32 * MIB,
            open_segment: 8 * MIB,
            latency_samples: 1000,
            memory_bytes: 32 * MIB,
            by_size_bytes: 4 * MIB,
        }
    }

    fn new(full: bool) -> Size {
        Size {
            full,
            single: 2_000_000,
            single_redb: 20_000,
            batched: 5_000_000,
            big_bytes: if full { 4 * GIB } else { GIB },
            read: 2_000_000,
            durable: Duration::from_secs(if full { 5 } else { 2 }),
            partitions: 1000,
            per_partition: 1000,
            open_bytes: if full { 10 * GIB } else { 2 * GIB },
            open_segment: if full { GIB } else { 256 * MIB },
            latency_samples: if full { 1_000_000 } else { 100_000 },
            memory_bytes: if full { 10 * GIB } else { 2 * GIB },
            by_size_bytes: if full { 512 * MIB } else { 128 * MIB },
        }
    }

    /// How much [`prime_memory`] writes before each timed run: the most
    /// any one run of rows 1–3 writes, and a quarter GiB more.
    fn primed(&self) -> u64 {
        let record = (KEY + VALUE + 10) as u64;
        (self.single * record)
            .max(self.batched * record)
            .max(self.big_bytes)
            + GIB / 4
    }
}

/// Bytes [`prime_memory`] writes (set from the [`Size`] at start).
static PRIME_BYTES: AtomicU64 = AtomicU64::new(0);

/// Writes [`PRIME_BYTES`] into a file in `dir` and deletes it, so that
/// the timed run that follows fills the page cache from memory the
/// hypervisor backs.
///
/// This VM reports the guest's free memory to its host (`virtio_balloon`'s
/// free page reporting, in 2 MiB blocks, about two seconds after they are
/// freed), and the host takes it back; the first touch of such memory
/// costs a fault in the host. A run that fills the page cache from it runs
/// at a fraction of the speed of one that finds page-cache memory freed a
/// moment before, whatever it runs. Measured with a C program writing
/// 1 GiB in 1 MiB `pwrite`s to a new file, 3 s after the previous run:
/// 0.63–1.39 GB/s alone, 4.28–5.43 GB/s right after writing and deleting a
/// 1.3 GB file (four runs each). Touching and freeing anonymous memory
/// instead did not help (1.1–1.5 GB/s, once 6.1). Which kind of memory a
/// run met used to depend on when the reporting worker last ran, so every
/// timed run of rows 1–3 and of the `write()` limit — brook's, its peers'
/// and the limit's alike — now starts right after this. (It is the
/// issue's "discard a warm-up run", done before every run.)
fn prime_memory(dir: &Path) {
    prime_memory_for(dir, PRIME_BYTES.load(Ordering::Relaxed));
}

/// [`prime_memory`] with `bytes` (none if 0).
fn prime_memory_for(dir: &Path, bytes: u64) {
    if bytes == 0 {
        return;
    }
    write_chunks(dir, &vec![1u8; MIB as usize], bytes.div_ceil(MIB));
    fs::remove_file(dir.join(WRITE_FILE)).unwrap();
}

/// One line of the table.
struct Row {
    workload: String,
    brook: String,
    commitlog: String,
    redb: String,
    limit: String,
    ratio: String,
    target: String,
}

fn row(workload: &str, target: &str) -> Row {
    Row {
        workload: workload.into(),
        brook: "—".into(),
        commitlog: "—".into(),
        redb: "—".into(),
        limit: "—".into(),
        ratio: "—".into(),
        target: target.into(),
    }
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        crash_child(Path::new(&dir));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench binaries without `--bench`: a
        // comparison run takes minutes, so do nothing there.
        println!("compare: run with `cargo bench --bench compare`");
        return;
    }
    let size = if args.iter().any(|a| a == "--quick") {
        Size::quick()
    } else {
        Size::new(args.iter().any(|a| a == "--full"))
    };
    PRIME_BYTES.store(size.primed(), Ordering::Relaxed);
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/compare");
    fs::create_dir_all(&out_dir).unwrap();
    let started = Instant::now();
    let mut rows = Vec::new();

    let limits = Limits::measure(&size);
    eprintln!("limits: {limits:?}");
    // `--only=2,5` runs just those workloads (9 is the plot).
    let only: Option<Vec<u32>> = args
        .iter()
        .find_map(|a| a.strip_prefix("--only="))
        .map(|list| list.split(',').filter_map(|n| n.parse().ok()).collect());
    let run = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    if run(1) {
        rows.push(single_appends(&size));
    }
    if run(2) {
        rows.push(batched_appends(&size, &limits));
    }
    if run(3) {
        rows.push(big_values(&size, &limits));
    }
    if run(4) {
        rows.extend(reads(&size));
    }
    if run(5) {
        rows.extend(durable(&size, &limits));
    }
    if run(6) {
        rows.extend(many_partitions_and_open(&size));
    }
    if run(7) {
        rows.push(latency(&size));
    }
    if run(8) {
        rows.extend(memory(&size));
    }
    let plot = if run(9) {
        throughput_by_size(&size)
    } else {
        String::new()
    };

    let mut table = String::new();
    table.push_str(&format!(
        "brook {} beside commitlog 0.2 and redb 3.1, {} ({} size, {:.0} s)\n\n",
        env!("CARGO_PKG_VERSION"),
        machine(),
        if size.full { "full" } else { "default" },
        started.elapsed().as_secs_f64()
    ));
    table.push_str(&format!("Limits: {}\n\n", limits.describe()));
    table.push_str(
        "| workload | brook | commitlog | redb | machine limit | brook ratio | target |\n",
    );
    table.push_str("|---|---|---|---|---|---|---|\n");
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.workload, r.brook, r.commitlog, r.redb, r.limit, r.ratio, r.target
        ));
    }
    println!("\n{table}");
    fs::write(out_dir.join("results.md"), &table).unwrap();
    if !plot.is_empty() {
        fs::write(out_dir.join("throughput_by_size.svg"), &plot).unwrap();
    }
    if args.iter().any(|a| a == "--docs") && only.is_none() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        fs::create_dir_all(&docs).unwrap();
        fs::write(docs.join("compare-results.md"), &table).unwrap();
        fs::write(docs.join("throughput_by_size.svg"), &plot).unwrap();
    }
    eprintln!("written to {}", out_dir.display());
}

// ---------------------------------------------------------------- helpers

fn keys() -> Vec<[u8; KEY]> {
    (0..1024)
        .map(|i| {
            let mut k = [0u8; KEY];
            k.copy_from_slice(format!("key-{i:012}").as_bytes());
            k
        })
        .collect()
}

fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `n` brook records of value `v`, keys cycling through `keys`.
fn brook_batch(keys: &[[u8; KEY]], v: &[u8], n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(v).key(keys[i % keys.len()]))
        .collect()
}

/// `n` brook records of value `v` under distinct 16-digit keys.
fn numbered_batch(v: &[u8], n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(v).key(format!("{i:016}")))
        .collect()
}

/// The same records for commitlog: the key as message metadata.
fn commitlog_batch(keys: &[[u8; KEY]], v: &[u8], n: usize) -> MessageBuf {
    let mut buf = MessageBuf::default();
    for i in 0..n {
        buf.push_with_metadata(keys[i % keys.len()], v).unwrap();
    }
    buf
}

fn brook_log(dir: &Path, sync: SyncPolicy) -> Log {
    Log::open_with(dir, LogConfig::default().sync(sync)).unwrap()
}

fn commitlog_at(dir: &Path, max_message: usize) -> CommitLog {
    let mut opts = LogOptions::new(dir);
    opts.message_max_bytes(max_message);
    opts.segment_max_bytes(1 << 30);
    CommitLog::new(opts).unwrap()
}

fn redb_at(dir: &Path) -> Database {
    Database::create(dir.join("events.redb")).unwrap()
}

/// Appends `txns` transactions of `per_txn` records (key = offset) to
/// redb without fsync (`Durability::None`, the equivalent of brook's
/// `SyncPolicy::Never`); returns the records written.
fn redb_append(db: &Database, txns: u64, per_txn: u64, value: &[u8]) -> u64 {
    let mut offset = 0;
    for _ in 0..txns {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::None).unwrap();
        {
            let mut table = tx.open_table(EVENTS).unwrap();
            for _ in 0..per_txn {
                table.insert(offset, value).unwrap();
                offset += 1;
            }
        }
        tx.commit().unwrap();
    }
    offset
}

/// The median of three timed runs of `run` (each given a fresh directory)
/// after an untimed warm-up; `run` returns the time of its timed part.
fn median_of_3(mut run: impl FnMut(&Path) -> Duration) -> Duration {
    let warm = tempfile::tempdir().unwrap();
    run(warm.path());
    drop(warm);
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            run(dir.path())
        })
        .collect();
    times.sort();
    times[1]
}

/// The file [`write_chunks`] writes in its directory.
const WRITE_FILE: &str = "limit";

/// The time of `n` page-cache `write()`s of `chunk` to a new file in `dir`
/// (the machine's write limit).
fn write_chunks(dir: &Path, chunk: &[u8], n: u64) -> Duration {
    let mut f = File::create(dir.join(WRITE_FILE)).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(chunk).unwrap();
    }
    start.elapsed()
}

/// Medians of alternating runs (see [`alternating`]).
struct Paired {
    ours: Duration,
    theirs: Duration,
    /// The median of the rounds' speed ratios (`theirs` time / `ours` time).
    ratio: f64,
}

/// Runs `ours` and then each of `theirs`, each in a new directory, five
/// rounds after a warm-up of each; returns one [`Paired`] per entry of
/// `theirs`. This VM's speed drifts within seconds (its host takes the
/// CPU, memory that sat idle is slow to touch again), so a ratio is taken
/// within each round, where both saw the same machine, and the median of
/// the five is reported; all of them share `ours`'s runs.
fn alternating(
    mut ours: impl FnMut(&Path) -> Duration,
    theirs: &mut [&mut dyn FnMut(&Path) -> Duration],
) -> Vec<Paired> {
    ours(tempfile::tempdir().unwrap().path());
    for run in theirs.iter_mut() {
        run(tempfile::tempdir().unwrap().path());
    }
    let mut a = Vec::new();
    let mut b = vec![Vec::new(); theirs.len()];
    let mut ratios = vec![Vec::new(); theirs.len()];
    let primed = || {
        let dir = tempfile::tempdir().unwrap();
        prime_memory(dir.path());
        dir
    };
    for _ in 0..5 {
        let x = ours(primed().path());
        a.push(x);
        for (j, run) in theirs.iter_mut().enumerate() {
            let y = run(primed().path());
            b[j].push(y);
            ratios[j].push(y.as_secs_f64() / x.as_secs_f64());
        }
    }
    a.sort();
    b.iter_mut()
        .zip(ratios)
        .map(|(b, r)| {
            b.sort();
            Paired {
                ours: a[2],
                theirs: b[2],
                ratio: median(r),
            }
        })
        .collect()
}

/// The median of `xs` (the upper one of an even count).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// [`alternating`] against one peer: five pairs.
fn paired(
    ours: impl FnMut(&Path) -> Duration,
    mut theirs: impl FnMut(&Path) -> Duration,
) -> Paired {
    alternating(ours, &mut [&mut theirs]).remove(0)
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn millions(rate: f64) -> String {
    format!("{:.2} M/s", rate / 1e6)
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores of {cpu}")
}

/// `VmRSS` and `RssAnon` of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

// ----------------------------------------------------------------- limits

#[derive(Debug)]
struct Limits {
    /// Sequential `write()` of 1 MiB chunks into the page cache, GB/s.
    write_gbps: f64,
    /// `memcpy` of 1 MiB chunks, GB/s.
    memcpy_gbps: f64,
    /// CRC-32C, GB/s.
    crc_gbps: f64,
    /// `write()` of 116 bytes then `fdatasync`, median.
    fdatasync: Duration,
}

impl Limits {
    fn measure(size: &Size) -> Limits {
        let chunk = vec![7u8; MIB as usize];
        let write = median_of_3(|dir| {
            prime_memory(dir);
            write_chunks(dir, &chunk, size.big_bytes / MIB)
        });
        let src = vec![3u8; 256 * MIB as usize];
        let mut dst = vec![0u8; MIB as usize];
        let memcpy = median_of_3(|_| {
            let start = Instant::now();
            for _ in 0..4 {
                for c in src.chunks(MIB as usize) {
                    dst.copy_from_slice(c);
                    black_box(&mut dst);
                }
            }
            start.elapsed()
        });
        let crc = median_of_3(|_| {
            let start = Instant::now();
            // The implementation brook checksums its batches with.
            let mut crc = 0;
            for _ in 0..4 {
                crc ^= crc_fast::crc32_iscsi(black_box(&src));
            }
            black_box(crc);
            start.elapsed()
        });
        let dir = tempfile::tempdir().unwrap();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("sync"))
            .unwrap();
        let record = [1u8; KEY + VALUE];
        let mut syncs: Vec<Duration> = (0..200)
            .map(|_| {
                let start = Instant::now();
                f.write_all(&record).unwrap();
                f.sync_data().unwrap();
                start.elapsed()
            })
            .collect();
        syncs.sort();
        Limits {
            write_gbps: gbps(size.big_bytes, write),
            memcpy_gbps: gbps(4 * 256 * MIB, memcpy),
            crc_gbps: gbps(4 * 256 * MIB, crc),
            fdatasync: syncs[syncs.len() / 2],
        }
    }

    fn describe(&self) -> String {
        format!(
            "page-cache `write()` {:.2} GB/s, `memcpy` {:.2} GB/s, CRC-32C {:.2} GB/s, \
             `fdatasync` median {}",
            self.write_gbps,
            self.memcpy_gbps,
            self.crc_gbps,
            micros(self.fdatasync)
        )
    }
}

// -------------------------------------------------------------- workloads

fn single_appends(size: &Size) -> Row {
    let keys = keys();
    let v = value(VALUE);
    let brook_run = |dir: &Path| {
        let log = brook_log(dir, SyncPolicy::Never);
        let t = log.create_topic("t", TopicConfig::default()).unwrap();
        let start = Instant::now();
        for i in 0..size.single as usize {
            black_box(t.append(keys[i % keys.len()], &v).unwrap());
        }
        start.elapsed()
    };
    let commitlog_run = |dir: &Path| {
        let mut log = commitlog_at(dir, 1 << 20);
        let mut buf = MessageBuf::default();
        let start = Instant::now();
        for i in 0..size.single as usize {
            buf.clear();
            buf.push_with_metadata(keys[i % keys.len()], &v).unwrap();
            black_box(log.append(&mut buf).unwrap());
        }
        start.elapsed()
    };
    let vs_commitlog = paired(brook_run, commitlog_run);
    let redb = median_of_3(|dir| {
        let db = redb_at(dir);
        let record = [&keys[0][..], &v].concat();
        let start = Instant::now();
        redb_append(&db, size.single_redb, 1, &record);
        start.elapsed()
    });
    let (b, c, r) = (
        per_sec(size.single, vs_commitlog.ours),
        per_sec(size.single, vs_commitlog.theirs),
        per_sec(size.single_redb, redb),
    );
    Row {
        brook: millions(b),
        commitlog: millions(c),
        redb: format!("{} (a transaction each)", millions(r)),
        ratio: format!(
            "{:.2}× commitlog (alternating runs), {} redb",
            vs_commitlog.ratio,
            ratio(b, r)
        ),
        ..row(
            "1. `append` one record at a time",
            "≥ 5 M/s and ≥ 5× commitlog",
        )
    }
}

fn batched_appends(size: &Size, limits: &Limits) -> Row {
    let keys = keys();
    let v = value(VALUE);
    let records = brook_batch(&keys, &v, BATCH);
    let calls = size.batched / BATCH as u64;
    // What brook's last run stored: the `write()` runs of the same rounds
    // write as much.
    let brook_bytes = std::cell::Cell::new(0);
    let mut brook_run = |dir: &Path| {
        let log = brook_log(dir, SyncPolicy::Never);
        let t = log.create_topic("t", TopicConfig::default()).unwrap();
        let start = Instant::now();
        for _ in 0..calls {
            black_box(t.send_batch(&records).unwrap());
        }
        let elapsed = start.elapsed();
        log.close().unwrap();
        brook_bytes.set(dir_bytes(dir));
        elapsed
    };
    let mut commitlog_run = |dir: &Path| {
        let mut log = commitlog_at(dir, 1 << 20);
        let mut buf = commitlog_batch(&keys, &v, BATCH);
        let start = Instant::now();
        for _ in 0..calls {
            black_box(log.append(&mut buf).unwrap());
        }
        start.elapsed()
    };
    // The same, building (encoding and checksumming) the batch in each
    // call, as brook's `send_batch` does from its records: the one above
    // re-appends one buffer encoded before the clock starts.
    let mut commitlog_encoding_run = |dir: &Path| {
        let mut log = commitlog_at(dir, 1 << 20);
        let mut buf = MessageBuf::default();
        let start = Instant::now();
        for _ in 0..calls {
            buf.clear();
            for i in 0..BATCH {
                buf.push_with_metadata(keys[i % keys.len()], &v).unwrap();
            }
            black_box(log.append(&mut buf).unwrap());
        }
        start.elapsed()
    };
    // The machine's limit in the same rounds: `write()` of 1 MiB chunks,
    // as many bytes as brook stored (its first run, the warm-up, comes
    // before any of these).
    let chunk = vec![7u8; MIB as usize];
    let mut write_run = |dir: &Path| write_chunks(dir, &chunk, brook_bytes.get().div_ceil(MIB));
    // One brook run per round, against all three.
    let [vs_commitlog, vs_encoding, vs_write]: [Paired; 3] = alternating(
        &mut brook_run,
        &mut [
            &mut commitlog_run,
            &mut commitlog_encoding_run,
            &mut write_run,
        ],
    )
    .try_into()
    .unwrap_or_else(|_| unreachable!("one result per peer"));
    let (brook, commitlog, commitlog_encoding) =
        (vs_commitlog.ours, vs_commitlog.theirs, vs_encoding.theirs);
    let redb = median_of_3(|dir| {
        let db = redb_at(dir);
        let record = [&keys[0][..], &v].concat();
        let start = Instant::now();
        redb_append(&db, calls / 10, BATCH as u64, &record);
        start.elapsed()
    });
    let (b, c, ce, r) = (
        per_sec(size.batched, brook),
        per_sec(size.batched, commitlog),
        per_sec(size.batched, commitlog_encoding),
        per_sec(size.batched / 10, redb),
    );
    // Bytes brook writes per second, against the page cache's `write()`:
    // in the same rounds (`vs_write`: the ratio of the times, both
    // writing the same bytes, rounded up to whole MiB for `write()`), and
    // against the limit measured at the start.
    let brook_gbps = b * (brook_bytes.get() as f64 / size.batched as f64) / 1e9;
    Row {
        brook: format!("{} ({:.2} GB/s)", millions(b), brook_gbps),
        commitlog: format!(
            "{} (one buffer encoded beforehand); {} building it in each call",
            millions(c),
            millions(ce)
        ),
        redb: format!("{} (a transaction per 1,000)", millions(r)),
        limit: format!("{:.2} GB/s `write()`", limits.write_gbps),
        ratio: format!(
            "alternating runs: {:.2}× commitlog ({:.2}× building its batches), {:.0} % of `write()` ({:.0} % of the run's first `write()` figure); {} redb",
            vs_commitlog.ratio,
            vs_encoding.ratio,
            100.0 * vs_write.ratio,
            100.0 * brook_gbps / limits.write_gbps,
            ratio(b, r),
        ),
        ..row(
            "2. `send_batch` of 1,000",
            "≥ 15 M/s, ≥ 1.5× commitlog, ≥ 50 % of `write()`",
        )
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += dir_bytes(&path);
        } else if path.extension().is_some_and(|e| e == "log") {
            total += entry.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

fn big_values(size: &Size, limits: &Limits) -> Row {
    let v = value(MIB as usize);
    let n = size.big_bytes / MIB;
    let brook_run = |dir: &Path| {
        let log = brook_log(dir, SyncPolicy::Never);
        let t = log
            .create_topic(
                "t",
                TopicConfig::default()
                    .segment_bytes(GIB)
                    .max_record_bytes(2 * MIB as usize),
            )
            .unwrap();
        let start = Instant::now();
        for _ in 0..n {
            black_box(t.append("k", &v).unwrap());
        }
        start.elapsed()
    };
    let write_run = |dir: &Path| write_chunks(dir, &v, n);
    // brook and `write()` alternate, so that each pair sees the same
    // machine (this VM's CPU is taken by its host at times, for seconds):
    // the ratio is the median of the pairs' ratios.
    let Paired {
        ours: brook,
        ratio: vs_write,
        ..
    } = paired(brook_run, write_run);
    let commitlog = median_of_3(|dir| {
        let mut log = commitlog_at(dir, 2 * MIB as usize);
        let start = Instant::now();
        for _ in 0..n {
            black_box(log.append_msg(&v).unwrap());
        }
        start.elapsed()
    });
    let redb = median_of_3(|dir| {
        let db = redb_at(dir);
        let start = Instant::now();
        redb_append(&db, n / 4, 1, &v);
        start.elapsed()
    });
    let (b, c, r) = (
        gbps(size.big_bytes, brook),
        gbps(size.big_bytes, commitlog),
        gbps(size.big_bytes / 4, redb),
    );
    Row {
        brook: format!("{b:.2} GB/s"),
        commitlog: format!("{c:.2} GB/s"),
        redb: format!("{r:.2} GB/s"),
        limit: format!("{:.2} GB/s `write()`", limits.write_gbps),
        ratio: format!(
            "{:.0} % of `write()` (alternating runs; {:.0} % of the run's first `write()` figure), {} commitlog",
            100.0 * vs_write,
            100.0 * b / limits.write_gbps,
            ratio(b, c)
        ),
        ..row("3. `append` of 1 MiB values", "≥ 70 % of `write()`")
    }
}

fn reads(size: &Size) -> Vec<Row> {
    let keys = keys();
    let v = value(VALUE);
    let n = size.read;
    // brook: prefilled, closed and reopened.
    let brook_dir = tempfile::tempdir().unwrap();
    {
        let log = brook_log(brook_dir.path(), SyncPolicy::Never);
        let t = log.create_topic("t", TopicConfig::default()).unwrap();
        let records = brook_batch(&keys, &v, BATCH);
        for _ in 0..n / BATCH as u64 {
            t.send_batch(&records).unwrap();
        }
        log.close().unwrap();
    }
    let log = Log::open(brook_dir.path()).unwrap();
    let part = log.topic("t").unwrap().partition(0).unwrap();
    let read_all = || {
        let start = Instant::now();
        let (mut next, mut bytes) = (0u64, 0usize);
        while next < n {
            let msgs = part.read(next, BATCH).unwrap();
            for m in &msgs {
                bytes += m.value().map_or(0, <[u8]>::len);
            }
            next = msgs.last().unwrap().offset() + 1;
        }
        black_box(bytes);
        start.elapsed()
    };
    let brook_read = median_of_3(|_| read_all());
    let poll_all = |round: u32| {
        let mut c = log
            .consumer_with(
                ConsumerConfig::new(format!("reader-{round}"))
                    .auto_offset_reset(OffsetReset::Earliest)
                    .enable_auto_commit(false)
                    .max_poll_records(2000),
            )
            .unwrap();
        c.subscribe(&["t"]).unwrap();
        let start = Instant::now();
        let (mut got, mut bytes) = (0u64, 0usize);
        while got < n {
            let msgs = c.poll(Duration::from_secs(1)).unwrap();
            for m in &msgs {
                bytes += m.value().map_or(0, <[u8]>::len);
            }
            got += msgs.len() as u64;
        }
        black_box(bytes);
        start.elapsed()
    };
    let mut round = 0;
    let brook_poll = median_of_3(|_| {
        round += 1;
        poll_all(round)
    });
    drop(part);
    log.close().unwrap();

    let cl_dir = tempfile::tempdir().unwrap();
    let mut cl = commitlog_at(cl_dir.path(), 1 << 20);
    let mut buf = commitlog_batch(&keys, &v, BATCH);
    for _ in 0..n / BATCH as u64 {
        cl.append(&mut buf).unwrap();
    }
    cl.flush().unwrap();
    let message_bytes = {
        let some = cl.read(0, ReadLimit::max_bytes(64 * 1024)).unwrap();
        some.bytes().len() / some.len()
    };
    let limit = ReadLimit::max_bytes(message_bytes * BATCH);
    let cl_read = median_of_3(|_| {
        let start = Instant::now();
        let (mut next, mut bytes) = (0u64, 0usize);
        while next < n {
            let msgs = cl.read(next, limit).unwrap();
            let mut count = 0;
            for m in msgs.iter() {
                bytes += m.payload().len();
                count += 1;
            }
            next += count;
        }
        black_box(bytes);
        start.elapsed()
    });

    let redb_dir = tempfile::tempdir().unwrap();
    let db = redb_at(redb_dir.path());
    let record = [&keys[0][..], &v].concat();
    let chunk = n.min(100_000);
    let offset = redb_append(&db, n / chunk, chunk, &record);
    let redb_read = median_of_3(|_| {
        let start = Instant::now();
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(EVENTS).unwrap();
        let mut bytes = 0;
        for entry in table.range(0..).unwrap() {
            let (_, v) = entry.unwrap();
            bytes += v.value().len();
        }
        black_box(bytes);
        start.elapsed()
    });
    let (b, p, c, r) = (
        per_sec(n, brook_read),
        per_sec(n, brook_poll),
        per_sec(n, cl_read),
        per_sec(offset, redb_read),
    );
    vec![
        Row {
            brook: millions(b),
            commitlog: millions(c),
            redb: format!("{} (range scan)", millions(r)),
            ratio: format!("{} commitlog, {} redb", ratio(b, c), ratio(b, r)),
            ..row(
                "4. `read` 1,000 at a time, whole partition",
                "≥ 25 M/s and ≥ 1× commitlog",
            )
        },
        Row {
            brook: millions(p),
            ..row("4. consumer `poll` (2,000 a call)", "≥ 15 M/s")
        },
    ]
}

/// What one phase of durable appends from some threads measured.
#[derive(Clone, Copy, Default)]
struct DurablePhase {
    appends: u64,
    elapsed: Duration,
    cpu: Duration,
    fsyncs: u64,
    fsync_time: Duration,
}

impl DurablePhase {
    fn rate(&self) -> f64 {
        per_sec(self.appends, self.elapsed)
    }

    fn add(mut self, o: &DurablePhase) -> DurablePhase {
        self.appends += o.appends;
        self.elapsed += o.elapsed;
        self.cpu += o.cpu;
        self.fsyncs += o.fsyncs;
        self.fsync_time += o.fsync_time;
        self
    }
}

/// brook, `SyncPolicy::Always`: `threads` append to one partition of a
/// new log for `time`.
fn durable_phase(threads: usize, time: Duration) -> DurablePhase {
    let keys = keys();
    let v = value(VALUE);
    let dir = tempfile::tempdir().unwrap();
    let log = brook_log(dir.path(), SyncPolicy::Always);
    let t = log.create_topic("t", TopicConfig::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu_time();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let (t, stop, count, v) = (t.clone(), stop.clone(), count.clone(), v.clone());
            let key = keys[w];
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    t.append(key, &v).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let m = log.metrics();
    let p = m.partition("t", 0).unwrap();
    let phase = DurablePhase {
        appends: count.load(Ordering::Relaxed),
        elapsed,
        cpu,
        fsyncs: p.fsyncs,
        fsync_time: Duration::from_nanos(p.fsync_time_ns),
    };
    log.close().unwrap();
    phase
}

fn durable(size: &Size, limits: &Limits) -> Vec<Row> {
    let keys = keys();
    let v = value(VALUE);
    // brook from 1, 4 and 16 threads, in turn, three rounds: the disk's
    // speed drifts, so each round's ratios are taken within the round.
    const THREADS: [usize; 3] = [1, 4, 16];
    const ROUNDS: u32 = 3;
    let mut rounds: Vec<[DurablePhase; 3]> = Vec::new();
    for _ in 0..ROUNDS {
        rounds.push(THREADS.map(|threads| durable_phase(threads, size.durable / ROUNDS)));
    }
    let rates: Vec<f64> = (0..THREADS.len())
        .map(|i| median(rounds.iter().map(|r| r[i].rate()).collect()))
        .collect();
    let ratios: Vec<f64> = (0..THREADS.len())
        .map(|i| median(rounds.iter().map(|r| r[i].rate() / r[0].rate()).collect()))
        .collect();
    let one_thread_latency = Duration::from_secs_f64(1.0 / rates[0]);
    // Appends per fsync, mean fsync time and CPU per append, over the
    // rounds, from the log's metrics and the process's CPU time.
    let shares: Vec<String> = (0..THREADS.len())
        .map(|i| {
            let p = rounds
                .iter()
                .fold(DurablePhase::default(), |sum, r| sum.add(&r[i]));
            format!(
                "{:.1} appends per fsync, fsync {} mean, CPU {} per append",
                p.appends as f64 / p.fsyncs.max(1) as f64,
                micros(p.fsync_time / p.fsyncs.max(1) as u32),
                micros(p.cpu / p.appends.max(1) as u32)
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut cl = commitlog_at(dir.path(), 1 << 20);
    let start = Instant::now();
    let mut n = 0u64;
    let mut buf = MessageBuf::default();
    while start.elapsed() < size.durable {
        buf.clear();
        buf.push_with_metadata(keys[0], &v).unwrap();
        cl.append(&mut buf).unwrap();
        cl.flush().unwrap();
        n += 1;
    }
    let cl_rate = per_sec(n, start.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let db = redb_at(dir.path());
    let record = [&keys[0][..], &v].concat();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < size.durable {
        let tx = db.begin_write().unwrap();
        tx.open_table(EVENTS)
            .unwrap()
            .insert(n, record.as_slice())
            .unwrap();
        tx.commit().unwrap();
        n += 1;
    }
    let redb_rate = per_sec(n, start.elapsed());
    let k = |r: f64| format!("{:.1} k/s", r / 1e3);
    vec![
        Row {
            brook: format!(
                "{} ({} each; {})",
                k(rates[0]),
                micros(one_thread_latency),
                shares[0]
            ),
            // commitlog 0.2's `flush` msyncs its index but never fsyncs the
            // segment: it cannot make an append durable, so no comparison.
            commitlog: format!("{} (`flush` each: does not fsync its data)", k(cl_rate)),
            redb: format!("{} (`Immediate` each)", k(redb_rate)),
            limit: format!("`fdatasync` {}", micros(limits.fdatasync)),
            ratio: format!(
                "{:.2}× `fdatasync` latency",
                one_thread_latency.as_secs_f64() / limits.fdatasync.as_secs_f64()
            ),
            ..row(
                "5. durable `append` (`SyncPolicy::Always`), 1 thread",
                "within 1.5× `fdatasync`",
            )
        },
        Row {
            brook: format!("{} ({})", k(rates[1]), shares[1]),
            ratio: format!("{:.2}× one thread (alternating runs)", ratios[1]),
            ..row("5. durable, 4 threads (group commit)", "")
        },
        Row {
            brook: format!("{} ({})", k(rates[2]), shares[2]),
            ratio: format!("{:.2}× one thread (alternating runs)", ratios[2]),
            ..row("5. durable, 16 threads (group commit)", "≥ 10× one thread")
        },
    ]
}

/// User plus system CPU time of this process so far.
fn process_cpu_time() -> Duration {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is
    // given, which lives across the call.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn many_partitions_and_open(size: &Size) -> Vec<Row> {
    // 1,000 partitions × 1,000 keyed records, sent 1,000 at a time.
    let dir = tempfile::tempdir().unwrap();
    let log = brook_log(dir.path(), SyncPolicy::Never);
    let t = log
        .create_topic("wide", TopicConfig::default().partitions(size.partitions))
        .unwrap();
    let v = value(VALUE);
    let total = size.partitions as u64 * size.per_partition;
    let batches: Vec<Vec<Record>> = (0..total / BATCH as u64)
        .map(|b| {
            (0..BATCH as u64)
                .map(|i| Record::new(v.clone()).key(format!("key-{:012}", b * BATCH as u64 + i)))
                .collect()
        })
        .collect();
    let start = Instant::now();
    for batch in &batches {
        t.send_batch(batch).unwrap();
    }
    let wide = start.elapsed();
    drop(batches);
    log.close().unwrap();
    drop(dir);

    // A log of `open_bytes` in `open_segment` segments: clean reopen, and
    // recovery after `kill -9` of a process that was appending.
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), size.open_bytes, size.open_segment);
    let start = Instant::now();
    let log = Log::open(dir.path()).unwrap();
    let clean = start.elapsed();
    log.close().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "appending", "the crash child did not start");
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    let log = Log::open(dir.path()).unwrap();
    let crashed = start.elapsed();
    log.close().unwrap();
    let gb = size.open_bytes as f64 / GIB as f64;
    vec![
        Row {
            brook: format!(
                "{} ({:.2} s)",
                millions(per_sec(total, wide)),
                wide.as_secs_f64()
            ),
            ..row(
                &format!(
                    "6. {} partitions × {} keyed records",
                    size.partitions, size.per_partition
                ),
                "",
            )
        },
        Row {
            brook: format!("{:.1} ms", clean.as_secs_f64() * 1e3),
            ..row(
                &format!(
                    "6. reopen {gb:.0} GiB in {} MiB segments after a clean close",
                    size.open_segment / MIB
                ),
                "< 50 ms (10 GB)",
            )
        },
        Row {
            brook: format!("{:.1} ms", crashed.as_secs_f64() * 1e3),
            ..row(
                &format!("6. reopen {gb:.0} GiB after `kill -9` while appending"),
                "< 1 s (reads only the unflushed tail)",
            )
        },
    ]
}

/// Writes `bytes` of 1 KiB records into one partition, `segment` bytes a
/// segment, and closes cleanly.
fn fill(dir: &Path, bytes: u64, segment: u64) {
    let log = brook_log(dir, SyncPolicy::Never);
    let t = log
        .create_topic("big", TopicConfig::default().segment_bytes(segment))
        .unwrap();
    let v = value(1000);
    let records = numbered_batch(&v, BATCH);
    for _ in 0..bytes / (BATCH as u64 * 1024) {
        t.send_batch(&records).unwrap();
    }
    log.close().unwrap();
}

/// The crash child: reopens the log, appends until killed.
fn crash_child(dir: &Path) {
    let log = brook_log(dir, SyncPolicy::Never);
    let t = log.topic("big").unwrap();
    let v = value(1000);
    println!("appending");
    std::io::stdout().flush().unwrap();
    loop {
        t.append("tail", &v).unwrap();
    }
}

fn latency(size: &Size) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let log = brook_log(dir.path(), SyncPolicy::Never);
    let t = log.create_topic("t", TopicConfig::default()).unwrap();
    let mut c = log
        .consumer_with(
            ConsumerConfig::new("lat")
                .auto_offset_reset(OffsetReset::Earliest)
                .enable_auto_commit(false),
        )
        .unwrap();
    c.subscribe(&["t"]).unwrap();
    c.poll(Duration::from_millis(50)).unwrap();
    let n = size.latency_samples;
    let origin = Instant::now();
    let seen = Arc::new(AtomicU64::new(0));
    let consumer = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::with_capacity(n);
            while samples.len() < n {
                for m in c.poll(Duration::from_secs(1)).unwrap() {
                    let sent = u64::from_le_bytes(m.value().unwrap()[..8].try_into().unwrap());
                    let now = origin.elapsed().as_nanos() as u64;
                    samples.push(now.saturating_sub(sent));
                    seen.fetch_add(1, Ordering::Release);
                }
            }
            samples
        })
    };
    let mut v = value(VALUE);
    for i in 0..n as u64 {
        let sent = origin.elapsed().as_nanos() as u64;
        v[..8].copy_from_slice(&sent.to_le_bytes());
        t.append("k", &v).unwrap();
        // One record in flight: latency, not queueing.
        while seen.load(Ordering::Acquire) <= i {
            std::hint::spin_loop();
        }
    }
    let mut samples = consumer.join().unwrap();
    samples.sort_unstable();
    let q = |p: f64| {
        Duration::from_nanos(samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)])
    };
    log.close().unwrap();
    Row {
        brook: format!(
            "p50 {}, p99 {}, p99.9 {}",
            micros(q(0.5)),
            micros(q(0.99)),
            micros(q(0.999))
        ),
        ..row(
            "7. `append` → `poll` on another thread",
            "median ≤ 20 µs, p99 ≤ 200 µs",
        )
    }
}

fn memory(size: &Size) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let log = brook_log(dir.path(), SyncPolicy::Never);
    let t = log.create_topic("t", TopicConfig::default()).unwrap();
    let v = value(1000);
    let records = numbered_batch(&v, BATCH);
    let per_call = BATCH as u64 * 1024;
    let calls = size.memory_bytes / per_call;
    // Eight samples over the run.
    let every = (calls / 8).max(1);
    let mut appending = Vec::new();
    for call in 1..=calls {
        t.send_batch(&records).unwrap();
        if call % every == 0 {
            appending.push(rss());
        }
    }
    let end = t.partition(0).unwrap().end_offset();
    let part = t.partition(0).unwrap();
    let mut reading = Vec::new();
    let mut next = 0;
    let mut read = 0u64;
    while next < end {
        let msgs = part.read(next, BATCH).unwrap();
        next = msgs.last().unwrap().offset() + 1;
        read += msgs.len() as u64;
        if read.is_multiple_of(every * BATCH as u64) {
            reading.push(rss());
        }
    }
    log.close().unwrap();
    let span = |s: &[(u64, u64)], pick: fn(&(u64, u64)) -> u64| {
        let min = s.iter().map(pick).min().unwrap_or(0);
        let max = s.iter().map(pick).max().unwrap_or(0);
        (min / MIB, max / MIB)
    };
    let describe = |s: &[(u64, u64)]| {
        let (rmin, rmax) = span(s, |x| x.0);
        let (amin, amax) = span(s, |x| x.1);
        format!("RSS {rmin}–{rmax} MiB, anonymous {amin}–{amax} MiB")
    };
    let mib = size.memory_bytes / MIB;
    vec![
        Row {
            brook: describe(&appending),
            ..row(
                &format!("8. memory while appending {mib} MiB (8 samples)"),
                "flat within ± 32 MiB from 1 to 10 GB",
            )
        },
        Row {
            brook: describe(&reading),
            ..row(
                &format!("8. memory while reading the {mib} MiB back"),
                "flat",
            )
        },
    ]
}

// ------------------------------------------------------------------- plot

/// Bytes per second of batched appends by value size, for brook
/// (`send_batch` of 1,000), commitlog (`append` of 1,000: re-appending one
/// buffer encoded before the clock starts, and building the buffer from
/// the records in each call, as `send_batch` does) and redb (a
/// transaction of 1,000), as an SVG line chart. Every timed run starts
/// right after [`prime_memory_for`] its data.
fn throughput_by_size(size: &Size) -> String {
    let sizes = [16usize, 100, 1000, 10_000, 100_000];
    let mut series: Vec<(&str, &str, Vec<f64>)> = vec![
        ("brook", "#1f77b4", Vec::new()),
        ("commitlog, one buffer", "#ff7f0e", Vec::new()),
        ("commitlog, built per call", "#d62728", Vec::new()),
        ("redb", "#2ca02c", Vec::new()),
    ];
    let prime = |dir: &Path| prime_memory_for(dir, size.by_size_bytes + 128 * MIB);
    for &len in &sizes {
        let v = value(len);
        let batch = BATCH.min((8 * MIB as usize / len).max(1));
        let calls = (size.by_size_bytes / (batch * len) as u64).max(1);
        let bytes = calls * (batch * len) as u64;
        let records = numbered_batch(&v, batch);
        let keys: Vec<String> = (0..batch).map(|i| format!("{i:016}")).collect();
        let b = median_of_3(|dir| {
            let log = brook_log(dir, SyncPolicy::Never);
            let t = log
                .create_topic(
                    "t",
                    TopicConfig::default().max_record_bytes(2 * MIB as usize),
                )
                .unwrap();
            prime(dir);
            let start = Instant::now();
            for _ in 0..calls {
                t.send_batch(&records).unwrap();
            }
            start.elapsed()
        });
        // commitlog re-appending one buffer encoded beforehand, or
        // (`rebuild`) building it from the records in each call.
        let commitlog = |rebuild: bool| {
            median_of_3(|dir| {
                // commitlog limits the bytes of one `append` call.
                let mut log = commitlog_at(dir, 16 * MIB as usize);
                let mut buf = MessageBuf::default();
                let fill = |buf: &mut MessageBuf| {
                    for k in &keys {
                        buf.push_with_metadata(k, &v).unwrap();
                    }
                };
                fill(&mut buf);
                prime(dir);
                let start = Instant::now();
                for _ in 0..calls {
                    if rebuild {
                        buf.clear();
                        fill(&mut buf);
                    }
                    log.append(&mut buf).unwrap();
                }
                start.elapsed()
            })
        };
        let (c, built) = (commitlog(false), commitlog(true));
        let r = median_of_3(|dir| {
            let db = redb_at(dir);
            prime(dir);
            let start = Instant::now();
            redb_append(&db, calls.div_ceil(4), batch as u64, &v);
            start.elapsed()
        });
        let redb_bytes = calls.div_ceil(4) * (batch * len) as u64;
        series[0].2.push(bytes as f64 / b.as_secs_f64() / 1e6);
        series[1].2.push(bytes as f64 / c.as_secs_f64() / 1e6);
        series[2].2.push(bytes as f64 / built.as_secs_f64() / 1e6);
        series[3].2.push(redb_bytes as f64 / r.as_secs_f64() / 1e6);
        eprintln!(
            "by size {len} B: brook {:.0} MB/s, commitlog {:.0} MB/s (one buffer), {:.0} MB/s \
             (built per call), redb {:.0} MB/s",
            series[0].2.last().unwrap(),
            series[1].2.last().unwrap(),
            series[2].2.last().unwrap(),
            series[3].2.last().unwrap()
        );
    }
    svg(&sizes, &series)
}

fn svg(sizes: &[usize], series: &[(&str, &str, Vec<f64>)]) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 400.0, 70.0, 50.0, 40.0, 240.0);
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .fold(1.0f64, f64::max);
    let x = |i: usize| left + (w - left - right) * i as f64 / (sizes.len() - 1) as f64;
    let y = |mbps: f64| h - bottom - (h - bottom - top) * mbps / max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">Batched appends: \
         MB/s by value size (16-byte keys, one partition)</text>\n",
        w / 2.0
    );
    out.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    ));
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let (label_x, line_y, line_end) = (left - 6.0, y(v), w - right);
        out.push_str(&format!(
            "<text x=\"{label_x}\" y=\"{}\" text-anchor=\"end\">{v:.0}</text>\n\
             <line x1=\"{left}\" y1=\"{line_y}\" x2=\"{line_end}\" y2=\"{line_y}\" \
             stroke=\"#ddd\"/>\n",
            line_y + 4.0
        ));
    }
    for (i, s) in sizes.iter().enumerate() {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{s} B</text>\n",
            x(i),
            h - bottom + 18.0
        ));
    }
    for (k, (name, color, values)) in series.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>\n",
            points.join(" "),
            w - right + 10.0,
            top + 20.0 + 18.0 * k as f64
        ));
    }
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">value size (bytes, log scale); \
         MB/s of values appended</text>\n</svg>\n",
        (left + w - right) / 2.0,
        h - 12.0
    ));
    out
}
