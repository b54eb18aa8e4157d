//! The fuzz entry points (`brook::fuzz`, feature `fuzzing`) on the seed
//! corpus in `fuzz/corpus/<target>/` and on cheap mutations of it: bit
//! flips, byte overwrites with edge values, truncations, cut-outs. Any
//! panic fails the test; the input is saved under
//! `target/fuzz-corpus-failures/` to replay (and to add to the corpus once
//! fixed). Runs in a few seconds, so CI runs it with `--all-features`.
//!
//! Also, `#[ignore]`d:
//! - `fuzz_without_cargo_fuzz`: the same mutations, at random, for
//!   `BROOK_FUZZ_SECS` seconds per target (default 60; `BROOK_FUZZ_TARGETS`
//!   picks targets, comma-separated), keeping inputs that end in a new
//!   outcome as further seeds: a fallback where cargo-fuzz cannot run;
//! - `regenerate_seed_corpus`: rewrites the brook-written seeds in
//!   `fuzz/corpus/` (regression inputs, named `crash-*`, are kept).
#![cfg(feature = "fuzzing")]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::Rng;

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 4] = [
    ("batch", brook::fuzz::batch),
    ("index", brook::fuzz::index),
    ("segment", brook::fuzz::segment),
    ("offsets", brook::fuzz::offsets),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    files
}

/// Values that break length and offset fields.
const EDGES: [u8; 6] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];

/// One cheap mutation of `seed`.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    let n = v.len() as u64;
    match rng.below(6) {
        _ if n == 0 => v.push(rng.next() as u8),
        0 | 1 => {
            // One to four bit flips.
            for _ in 0..=rng.below(4) {
                let i = rng.below(n) as usize;
                v[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            // A run of 1-8 bytes set to an edge value.
            let i = rng.below(n) as usize;
            let len = (1 + rng.below(8) as usize).min(v.len() - i);
            let b = EDGES[rng.below(EDGES.len() as u64) as usize];
            v[i..i + len].fill(b);
        }
        3 => v.truncate(rng.below(n) as usize),
        4 => {
            // Cut out a range.
            let i = rng.below(n) as usize;
            let len = 1 + rng.below(((n as usize - i) as u64).min(64)) as usize;
            v.drain(i..i + len);
        }
        _ => {
            // A random byte, or a copy of another range, inserted.
            let i = rng.below(n + 1) as usize;
            if rng.below(2) == 0 {
                v.insert(i, rng.next() as u8);
            } else {
                let s = rng.below(n) as usize;
                let len = (1 + rng.below(16) as usize).min(v.len() - s);
                let chunk = v[s..s + len].to_vec();
                v.splice(i..i, chunk);
            }
        }
    }
    v
}

/// Runs `entry` on `input`; on a panic saves the input and returns where.
fn run(target: &str, entry: Entry, input: &[u8], what: &str) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| entry(input))) {
        Ok(()) => Ok(()),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-corpus-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!(
                "{target}-{:016x}",
                input
                    .iter()
                    .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64)
                        .wrapping_mul(0x100_0000_01b3))
            ));
            std::fs::write(&path, input).unwrap();
            Err(format!("{target} {what}: {msg} (input saved to {path:?})"))
        }
    }
}

/// Mutations per seed file: the segment target opens real logs, so fewer.
fn mutations_per_seed(target: &str) -> usize {
    match target {
        "segment" => 150,
        _ => 3000,
    }
}

#[test]
fn corpus_and_mutations_never_panic() {
    // Panics are caught and reported below; keep the output readable.
    std::panic::set_hook(Box::new(|i| eprintln!("{i}")));
    let mut failures = Vec::new();
    for (target, entry) in TARGETS {
        let started = Instant::now();
        let files = corpus(target);
        let mut runs = 0usize;
        for (name, seed) in &files {
            if let Err(e) = run(target, entry, seed, name) {
                failures.push(e);
            }
            let mut rng = Rng::new(
                name.bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31) ^ b as u64),
            );
            for i in 0..mutations_per_seed(target) {
                let input = mutate(seed, &mut rng);
                if let Err(e) = run(target, entry, &input, &format!("{name} mutation {i}")) {
                    failures.push(e);
                }
            }
            runs += 1 + mutations_per_seed(target);
        }
        eprintln!(
            "{target}: {} corpus files, {runs} inputs in {:.1?}",
            files.len(),
            started.elapsed()
        );
    }
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} inputs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Random mutation fuzzing without coverage feedback, for machines where
/// cargo-fuzz (nightly, libFuzzer) cannot run.
#[test]
#[ignore]
fn fuzz_without_cargo_fuzz() {
    let secs = common::env_u64("BROOK_FUZZ_SECS").unwrap_or(60);
    let pick = std::env::var("BROOK_FUZZ_TARGETS").ok();
    let seed = common::seed("BROOK_FUZZ_SEED");
    eprintln!("BROOK_FUZZ_SEED={seed}");
    let mut rng = Rng::new(seed);
    std::panic::set_hook(Box::new(|i| eprintln!("{i}")));
    let mut failures = Vec::new();
    for (target, entry) in TARGETS {
        if pick
            .as_deref()
            .is_some_and(|p| !p.split(',').any(|t| t == target))
        {
            continue;
        }
        let mut pool: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
        let seeds = pool.len();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let cpu = cpu_time();
        let mut runs = 0u64;
        while Instant::now() < deadline && failures.len() < 20 {
            let base = &pool[rng.below(pool.len() as u64) as usize];
            // Stack up to four mutations.
            let mut input = mutate(base, &mut rng);
            for _ in 0..rng.below(4) {
                input = mutate(&input, &mut rng);
            }
            if let Err(e) = run(target, entry, &input, "random mutation") {
                failures.push(e);
            } else if rng.below(64) == 0 && pool.len() < 4096 {
                // Without coverage, keep a sample of survivors as seeds so
                // mutations compound.
                pool.push(input);
            }
            runs += 1;
        }
        eprintln!(
            "{target}: {runs} inputs from {seeds} seeds in {secs} s, {:.2} CPU-minutes",
            (cpu_time() - cpu).as_secs_f64() / 60.0
        );
    }
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} inputs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// CPU time of this process (user + system).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[test]
#[ignore]
fn regenerate_seed_corpus() {
    let scratch = tempfile::tempdir().unwrap();
    let seeds = brook::fuzz::seeds(scratch.path()).unwrap();
    for (target, _) in TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if !e.file_name().to_string_lossy().starts_with("crash-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    for (target, name, bytes) in seeds {
        std::fs::write(corpus_dir(target).join(name), bytes).unwrap();
    }
}
