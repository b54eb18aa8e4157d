#!/usr/bin/env python3
"""Two kernel costs behind brook's figures, measured on this machine.

1. Writing into a shared memory map against `pwrite`: 1 GiB in 126 KB
   chunks into a file preallocated with `posix_fallocate` (as brook's
   active segment is), alternating the two so both see the same machine.
2. `fdatasync` latency after appending 126 bytes or 2,016 bytes (one or
   sixteen of brook's benchmark records) to a file that is either
   preallocated (unwritten extents: the first write to a block needs a
   metadata update) or written beforehand.

Run: `python3 benches/kernel_probe.py [directory]` (default: a temporary
directory under the current one; it needs about 1.1 GB free).
"""

import mmap
import os
import sys
import tempfile
import time

GIB = 1 << 30
CHUNK = 126_000


def map_or_pwrite(d, use_map):
    path = os.path.join(d, "probe")
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    chunk = b"\x05" * CHUNK
    os.posix_fallocate(fd, 0, GIB)
    m = mmap.mmap(fd, GIB) if use_map else None
    start = time.perf_counter()
    pos = 0
    while pos + CHUNK <= GIB:
        if use_map:
            m[pos : pos + CHUNK] = chunk
        else:
            os.pwrite(fd, chunk, pos)
        pos += CHUNK
    took = time.perf_counter() - start
    if m is not None:
        m.close()
    os.close(fd)
    os.unlink(path)
    return pos / took / 1e9


def fdatasync_after(d, prewritten, step, n=1500):
    path = os.path.join(d, "sync")
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    size = 16 << 20
    if prewritten:
        os.pwrite(fd, os.urandom(size), 0)
    else:
        os.posix_fallocate(fd, 0, size)
    os.fsync(fd)
    record = b"x" * step
    times = []
    for i in range(n):
        start = time.perf_counter()
        os.pwrite(fd, record, i * step)
        os.fdatasync(fd)
        times.append(time.perf_counter() - start)
    os.close(fd)
    os.unlink(path)
    times.sort()
    return times[len(times) // 2] * 1e6


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "."
    with tempfile.TemporaryDirectory(dir=base) as d:
        print("writes of 126 KB chunks into a preallocated 1 GiB file, GB/s:")
        for _ in range(3):
            mapped = map_or_pwrite(d, True)
            written = map_or_pwrite(d, False)
            print(f"  shared map {mapped:.2f}   pwrite {written:.2f}")
        print("fdatasync after appending, median µs:")
        for step in (126, 2016):
            for prewritten in (False, True):
                kind = "written beforehand" if prewritten else "posix_fallocate"
                us = fdatasync_after(d, prewritten, step)
                print(f"  {step:5} bytes, {kind:18} {us:6.0f}")


if __name__ == "__main__":
    main()
