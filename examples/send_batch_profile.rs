//! A fixed workload for instruction-count profiling of `Topic::send_batch`
//! (the `send_batch_1000` benchmark without criterion around it):
//! `ITERS` calls of 1,000 records (16-byte key, 100-byte value), one
//! partition, `SyncPolicy::Never`.
//!
//! `cargo build --release --example send_batch_profile` then
//! `valgrind --tool=callgrind target/release/examples/send_batch_profile [ITERS]`.

use std::hint::black_box;

use brook::{Log, LogConfig, Record, SyncPolicy, TopicConfig};

fn main() -> brook::Result<()> {
    let iters: usize = std::env::args()
        .nth(1)
        .map_or(200, |a| a.parse().expect("ITERS is a number"));
    let value: Vec<u8> = (0..100).map(|i| b'a' + (i % 26) as u8).collect();
    let records: Vec<Record> = (0..1000)
        .map(|i| Record::new(&value).key(format!("key-{:012}", i % 1024)))
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = Log::open_with(dir.path(), LogConfig::default().sync(SyncPolicy::Never))?;
    let topic = log.create_topic("profile", TopicConfig::default())?;
    // Warm-up: the segment's first allocations are not what is measured.
    topic.send_batch(&records)?;
    let (user0, sys0) = cpu_times();
    let start = std::time::Instant::now();
    for _ in 0..iters {
        black_box(topic.send_batch(&records)?);
    }
    let wall = start.elapsed().as_secs_f64();
    let (user1, sys1) = cpu_times();
    let per_call = |s: f64| s * 1e6 / iters as f64;
    eprintln!(
        "{iters} calls: {:.1} M records/s; per call {:.1} us wall, {:.1} us user, {:.1} us system",
        iters as f64 * 1000.0 / wall / 1e6,
        per_call(wall),
        per_call(user1 - user0),
        per_call(sys1 - sys0),
    );
    Ok(())
}

/// User and system CPU seconds of this process so far.
fn cpu_times() -> (f64, f64) {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}
