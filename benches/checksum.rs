//! CRC-32C throughput: `crc-fast` (what brook checksums its batches with)
//! beside the `crc32c` crate (what it used before), on the sizes brook
//! checksums: one 130-byte record, one sealed 16 KiB batch, one 1 MiB
//! value's batch.
//!
//! `cargo bench --bench checksum`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn checksum(c: &mut Criterion) {
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 31 + 7) as u8).collect();
    let mut group = c.benchmark_group("crc32c");
    for len in [130usize, 16 * 1024, 1 << 20] {
        let bytes = &data[..len];
        assert_eq!(crc_fast::crc32_iscsi(bytes), crc32c::crc32c(bytes));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("crc-fast", len), bytes, |b, bytes| {
            b.iter(|| crc_fast::crc32_iscsi(black_box(bytes)))
        });
        group.bench_with_input(BenchmarkId::new("crc32c", len), bytes, |b, bytes| {
            b.iter(|| crc32c::crc32c(black_box(bytes)))
        });
    }
    group.finish();
}

criterion_group!(benches, checksum);
criterion_main!(benches);
