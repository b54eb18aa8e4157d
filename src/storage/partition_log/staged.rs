//! Appending a large call with `pwrite`: the *staged* path.
//!
//! Records normally go through the active segment's shared map (see the
//! parent module), with the pager writing zeros and faulting in pages ahead
//! of the writer. That costs a second pass over every page (the zeros)
//! plus the page-table work, which for small records hides behind their
//! encoding, but which caps a call of large records at what the pager
//! manages: 2.1–2.5 GB/s here, where `write()` of the same bytes runs at
//! 3.4–4.6 GB/s (`cargo bench --bench compare -- --only=9`, 1,000- to
//! 100,000-byte values).
//!
//! So a call that appends at least [`STAGED_MIN_CALL`] bytes of records of
//! at least [`STAGED_MIN_RECORD`] bytes each (judged, where a batch would
//! open, from the record at hand and how many follow it) encodes them into
//! a buffer of [`STAGE_BYTES`], as the same batches the map
//! would get (sealed at [`BATCH_TARGET_BYTES`], a segment rolled where the
//! map would roll it), and writes the buffer with `pwrite` whenever it
//! fills. The call's batches and index entries are the same either way;
//! the one trace of the path is where the call ends: a staged call seals
//! its last batch, as a flush would, so the next append opens a batch of
//! its own where through the map it might have joined the call's last
//! one. A record too large for the buffer is written alone
//! from the caller's buffers, as any record over 64 KiB is. Compressed
//! topics (compressed batch by batch in place) and idempotent producers'
//! sends keep to the map. Buffers come from a small pool: the memory
//! follows how many calls stage at once (at most [`KEPT_STAGES`] idle
//! buffers are kept).
//!
//! Where the map and `pwrite` cross over, measured with a scratch program
//! (512 MiB of `send_batch` calls of 1,000 records, 16-byte keys, after
//! writing and deleting a file to prime memory; seven alternating runs,
//! medians, MB/s of values, 2026-12-04):
//!
//! | value bytes | 100 | 300 | 500 | 700 | 1,000 | 4,000 |
//! |---|---|---|---|---|---|---|
//! | through the map | 2,434 | 2,826 | 2,923 | 2,623 | 2,781 | 2,760 |
//! | staged | 2,110 | 2,154 | 3,263 | 3,523 | 3,324 | 3,860 |
//!
//! Crash safety: the buffer is written in two calls, everything but the
//! first batch's header, then that header. A process killed in between
//! leaves zeros where the header goes (the bytes past the log's end are
//! zeros: preallocated, or written as zeros by the pager), which recovery
//! reads as the end of the log, and recovery cuts the file there. A
//! record's offset is handed to `on_append` when it is encoded, but the
//! log's end moves past it, and readers see it, only once both writes
//! succeeded; a failed write makes the partition read-only, as for a large
//! record written alone (`append_alone`).

use std::path::Path;

use parking_lot::Mutex;

use super::{Limits, State, BATCH_TARGET_BYTES};
use crate::error::Result;
use crate::format::{self, Compression, NewBatch, RecordParts, BATCH_HEADER_BYTES};
use crate::io::DataFile;

/// Size of a staging buffer, and the most one `pwrite` writes.
pub(super) const STAGE_BYTES: usize = 1024 * 1024;
/// A call stages its records only if the record at hand where a batch would
/// open takes at least this many bytes encoded (below, copying through the
/// map wins: see the module docs)...
pub(super) const STAGED_MIN_RECORD: usize = 512;
/// ...and it and the records after it, judged from it, at least this many.
pub(super) const STAGED_MIN_CALL: usize = 256 * 1024;
/// Idle staging buffers kept for later calls; more are freed.
const KEPT_STAGES: usize = 4;

/// Staging buffers not in use. A call takes one (or allocates one) and
/// gives it back, so the memory follows how many calls stage at once, not
/// how many threads ever staged one (an async runtime's blocking pool may
/// run hundreds).
static STAGES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A staging buffer of [`STAGE_BYTES`], back to the pool when dropped
/// (on an error too).
struct Stage(Vec<u8>);

impl Stage {
    fn take() -> Stage {
        let mut buf = STAGES.lock().pop().unwrap_or_default();
        buf.resize(STAGE_BYTES, 0);
        Stage(buf)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let mut idle = STAGES.lock();
        if idle.len() < KEPT_STAGES {
            idle.push(std::mem::take(&mut self.0));
        }
    }
}

/// The batch being filled in the buffer.
struct StagedBatch {
    /// Where it starts in the buffer.
    at: usize,
    base_offset: u64,
    base_timestamp: i64,
    max_timestamp: i64,
    count: u32,
}

/// A batch sealed in the buffer.
struct SealedBatch {
    /// Where it starts and ends in the buffer.
    at: usize,
    end: usize,
    last_offset: u64,
    max_timestamp: i64,
}

/// What the buffer holds: sealed batches, then the batch being filled.
struct Run {
    /// The file position of the buffer's first byte.
    start: u64,
    /// Bytes of the buffer in use.
    len: usize,
    /// The offset of the next record.
    next_offset: u64,
    sealed: Vec<SealedBatch>,
    open: Option<StagedBatch>,
}

impl Run {
    fn new(start: u64, next_offset: u64) -> Run {
        Run {
            start,
            len: 0,
            next_offset,
            sealed: Vec::new(),
            open: None,
        }
    }

    /// Seals the batch being filled, if any.
    fn seal(&mut self, stage: &mut [u8]) {
        if let Some(b) = self.open.take() {
            let last_delta = b.count as i32 - 1;
            format::seal_batch(
                &mut stage[b.at..self.len],
                last_delta,
                b.max_timestamp,
                b.count as i32,
            );
            self.sealed.push(SealedBatch {
                at: b.at,
                end: self.len,
                last_offset: b.base_offset + u64::from(b.count) - 1,
                max_timestamp: b.max_timestamp,
            });
        }
    }

    /// Adds the record to the batch being filled if it fits there (the
    /// batch's target size, the buffer, and `capacity`, the segment's map,
    /// as the map path checks them); whether it did.
    fn add(&mut self, stage: &mut [u8], parts: &RecordParts<'_>, ts: i64, capacity: u64) -> bool {
        let Some(b) = self.open.as_mut() else {
            return false;
        };
        let off_delta = self.next_offset - b.base_offset;
        if off_delta >= i32::MAX as u64 {
            return false;
        }
        // A batch's first record may take it past its target size.
        let target = match b.count {
            0 => stage.len(),
            _ => b.at + BATCH_TARGET_BYTES as usize,
        };
        let room = capacity.saturating_sub(self.start).min(stage.len() as u64) as usize;
        let limit = target.min(room).max(self.len);
        let Some(len) = parts.encode_into(
            &mut stage[self.len..limit],
            ts - b.base_timestamp,
            off_delta as i32,
        ) else {
            return false;
        };
        self.len += len;
        b.count += 1;
        b.max_timestamp = b.max_timestamp.max(ts);
        self.next_offset += 1;
        true
    }
}

impl State {
    /// Whether a call is staged from `parts` on (see the module docs): the
    /// record `append_run` handed back, with at least `more` records after
    /// it. Not if the open batch takes the record (`append_run` also stops
    /// where the writer's claim on the file ends): the map path would add
    /// it there, and the call's batches must be the same either way.
    #[inline]
    pub(super) fn stages(&self, parts: &RecordParts<'_>, ts: i64, more: usize) -> bool {
        if more == 0 || self.compression != Compression::None {
            return false;
        }
        let len = parts.encoded_len(0, 0);
        if len < STAGED_MIN_RECORD || len.saturating_mul(more.saturating_add(1)) < STAGED_MIN_CALL {
            return false;
        }
        self.open_fit(parts, ts, None).is_none()
    }

    /// Appends `first` and then every record of `records` through a
    /// staging buffer (see the module docs), calling `on_append(offset,
    /// timestamp)` for each. Records must already be validated.
    #[inline(never)]
    pub(super) fn append_staged<'r>(
        &mut self,
        dir: &Path,
        limits: Limits,
        first: (RecordParts<'r>, i64),
        records: &mut impl Iterator<Item = (RecordParts<'r>, i64)>,
        on_append: &mut impl FnMut(u64, i64),
    ) -> Result<()> {
        let mut buf = Stage::take();
        let stage = &mut buf.0[..];
        self.seal_open();
        let mut run = Run::new(self.active.write_pos, self.next_offset);
        let mut next = Some(first);
        while let Some((parts, ts)) = next.take().or_else(|| records.next()) {
            if run.add(stage, &parts, ts, self.active.capacity) {
                on_append(run.next_offset - 1, ts);
                continue;
            }
            run.seal(stage);
            // A batch opened with this record: at most its target size, or
            // this record's if larger.
            let len = BATCH_HEADER_BYTES + parts.encoded_len(0, 0);
            if len > STAGE_BYTES {
                // Larger than the buffer: written alone, from the caller's
                // buffers.
                self.write_staged(stage, &mut run)?;
                run = self.append_unstaged(dir, limits, parts, ts, on_append)?;
                continue;
            }
            let at = run.start + run.len as u64;
            if self.rolls_before(at, len as u64, run.next_offset, limits) {
                self.write_staged(stage, &mut run)?;
                self.roll(dir, limits)?;
                run = Run::new(self.active.write_pos, self.next_offset);
            } else if run.len + len.max(BATCH_TARGET_BYTES as usize) > STAGE_BYTES {
                // The batch might not fit whole: the map would not cut it
                // short, so neither may the buffer.
                self.write_staged(stage, &mut run)?;
            }
            let epoch = self.stamp_epoch(run.next_offset);
            format::write_open_header(
                &mut stage[run.len..run.len + BATCH_HEADER_BYTES],
                NewBatch {
                    base_offset: run.next_offset,
                    base_timestamp: ts,
                    leader_epoch: epoch,
                    producer: None,
                },
            );
            run.open = Some(StagedBatch {
                at: run.len,
                base_offset: run.next_offset,
                base_timestamp: ts,
                max_timestamp: ts,
                count: 0,
            });
            run.len += BATCH_HEADER_BYTES;
            if !run.add(stage, &parts, ts, self.active.capacity) {
                // Not expected: the segment and the buffer were checked for
                // the whole batch above, and a segment holds any record
                // (`segment_bytes` is at least the largest record plus a
                // batch header). Should it happen, the empty batch goes and
                // the record takes the general path, which rolls or grows
                // as it needs.
                run.open = None;
                run.len -= BATCH_HEADER_BYTES;
                self.write_staged(stage, &mut run)?;
                run = self.append_unstaged(dir, limits, parts, ts, on_append)?;
                continue;
            }
            on_append(run.next_offset - 1, ts);
        }
        run.seal(stage);
        self.write_staged(stage, &mut run)
    }

    /// Appends one record through the general path (`append_one`), the
    /// buffer written; returns the run that follows it.
    fn append_unstaged(
        &mut self,
        dir: &Path,
        limits: Limits,
        parts: RecordParts<'_>,
        ts: i64,
        on_append: &mut impl FnMut(u64, i64),
    ) -> Result<Run> {
        let offset = self.append_one(dir, limits, parts, ts, None)?;
        on_append(offset, ts);
        // A record over 64 KiB leaves no open batch; a smaller one (not
        // expected here) leaves one, which the next staged batch must
        // follow.
        self.seal_open();
        Ok(Run::new(self.active.write_pos, self.next_offset))
    }

    /// Writes the sealed batches of `run` to the active segment's file and
    /// publishes them (see the module docs for the order of the writes).
    fn write_staged(&mut self, stage: &[u8], run: &mut Run) -> Result<()> {
        debug_assert!(run.open.is_none());
        if run.len == 0 {
            return Ok(());
        }
        let a = &mut self.active;
        debug_assert_eq!(run.start, a.write_pos);
        let end = run.start + run.len as u64;
        a.make_room(end)?;
        let path = &a.seg.log_path;
        // Failing to open (no descriptor left) writes nothing: a plain,
        // retryable error.
        let file = DataFile::open(path, false)?;
        let written = (|| {
            file.write_all_at(
                &stage[BATCH_HEADER_BYTES..run.len],
                run.start + BATCH_HEADER_BYTES as u64,
            )?;
            #[cfg(test)]
            if crate::io::faults::staged_write_crash_due() {
                // The process "dies" here; the test drops this state unused.
                return Err(crate::error::Error::io(
                    "write",
                    path,
                    std::io::Error::other("killed before the first batch header"),
                ));
            }
            file.write_all_at(&stage[..BATCH_HEADER_BYTES], run.start)
        })();
        if let Err(e) = written {
            let path = path.clone();
            return Err(self.write_failed(path, e));
        }
        let a = &mut self.active;
        // Bytes written with `pwrite` count toward no prefault window (see
        // `append_alone`).
        a.pwritten_to = end;
        #[cfg(test)]
        tests::STAGED_WRITES.with(|n| n.set(n.get() + 1));
        for b in &run.sealed {
            let start = run.start + b.at as u64;
            let len = (b.end - b.at) as u64;
            a.ix.add_batch(
                a.seg.base_offset,
                start,
                len,
                b.last_offset,
                b.max_timestamp,
            );
        }
        // Compressed topics never stage, so there is nothing else of
        // `finish_batch` to do; one publication covers every batch.
        a.write_pos = end;
        a.publish_sealed();
        self.next_offset = run.next_offset;
        self.bytes_in += run.len as u64;
        *run = Run::new(end, run.next_offset);
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::cell::Cell;
    use std::path::Path;

    use super::super::tests::{
        append_mixed, check_mixed, mixed_record, reopen_with, topic, LIMITS,
    };
    use super::super::{Limits, PartitionLog};
    use super::*;
    use crate::io;

    thread_local! {
        /// Writes of staged batches on this thread (to tell that a call
        /// took the staged path).
        pub(in super::super) static STAGED_WRITES: Cell<u64> = const { Cell::new(0) };
    }

    /// The test limits with segments of `bytes`.
    fn segments_of(bytes: u64) -> Limits {
        Limits {
            segment_bytes: bytes,
            ..LIMITS
        }
    }

    fn staged_writes() -> u64 {
        STAGED_WRITES.with(Cell::get)
    }

    /// Appends records of the given value sizes, numbered from `from`, in
    /// one call (as `append_mixed` does one at a time).
    fn append_call(log: &PartitionLog, from: usize, sizes: &[usize]) -> Result<u64> {
        let records: Vec<_> = (0..sizes.len())
            .map(|i| mixed_record(from + i, sizes[i]))
            .collect();
        let mut next = from as u64;
        log.append(
            records
                .iter()
                .enumerate()
                .map(|(i, (key, value, headers))| {
                    let parts = RecordParts::new(Some(key.as_bytes()), Some(value), headers);
                    (parts, 1_000 + (from + i) as i64)
                }),
            |offset, _| {
                assert_eq!(offset, next, "offsets handed out in order");
                next += 1;
            },
        )
    }

    /// The segment files under `dir` (`.log` and indexes), by name, without
    /// trailing zeros (an active segment's file is allocated ahead).
    fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "log" || x == "index" || x == "timeindex")
            })
            .map(|p| {
                let mut data = std::fs::read(&p).unwrap();
                let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                data.truncate(end);
                (p.file_name().unwrap().to_string_lossy().into_owned(), data)
            })
            .collect();
        files.sort();
        files
    }

    /// Asserts that `files` (from [`segment_files`]) are `reference`: the
    /// same names, each with the same bytes; `how` says how the reference
    /// was written.
    fn assert_same_files(files: &[(String, Vec<u8>)], reference: &[(String, Vec<u8>)], how: &str) {
        let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(files),
            names(reference),
            "the same segment files as {how}"
        );
        for ((name, got), (_, want)) in files.iter().zip(reference) {
            let first_difference = got.iter().zip(want).position(|(a, b)| a != b);
            assert!(
                got.len() == want.len() && first_difference.is_none(),
                "{name}: {} bytes against {} {how}, first difference at {first_difference:?}",
                got.len(),
                want.len()
            );
        }
    }

    /// Appends `prefix` one record at a time, then `call` in one call that
    /// must take the staged path, and the same records one at a time into
    /// a second partition (flushed after them: a staged call ends sealed);
    /// checks that both hold the same bytes, that the records read back,
    /// and that they do after a kill too.
    fn same_bytes_either_way(limits: Limits, prefix: &[usize], call: &[usize]) {
        let (staged, alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let all = [prefix, call].concat();
        let log = PartitionLog::create(staged.path(), topic(), 0, limits).unwrap();
        append_mixed(&log, 0, prefix);
        let before = staged_writes();
        let end = append_call(&log, prefix.len(), call).unwrap();
        assert_eq!(end, all.len() as u64);
        assert!(staged_writes() > before, "the call was staged");
        check_mixed(&log, &all);
        let reference = PartitionLog::create(alone.path(), topic(), 0, limits).unwrap();
        let before = staged_writes();
        append_mixed(&reference, 0, &all);
        assert_eq!(staged_writes(), before, "single appends are never staged");
        // A staged call leaves no open batch: the last one is sealed here.
        reference.flush().unwrap();
        // Dropped without a close, as a kill leaves them.
        let (dir, reference_dir) = (log.dir.clone(), reference.dir.clone());
        drop((log, reference));
        let files = segment_files(&dir);
        assert!(files.len() >= 3, "some segment files: {}", files.len());
        assert_same_files(
            &files,
            &segment_files(&reference_dir),
            "written one record at a time",
        );
        check_mixed(&reopen_with(staged.path(), limits), &all);
    }

    #[test]
    fn a_staged_call_writes_the_batches_single_appends_would() {
        // 256 KiB segments roll several times within the call; records
        // from 100 bytes to more than a batch's target.
        let limits = segments_of(256 * 1024);
        let call: Vec<usize> = (0..150)
            .map(|i| [20_000, 600, 3_000, 100, 700, 16_000, 9_000, 40][i % 8])
            .collect();
        same_bytes_either_way(limits, &[10, 20, 30], &call);
    }

    #[test]
    fn a_record_larger_than_the_staging_buffer_is_written_alone_within_a_staged_call() {
        let limits = segments_of(8 << 20);
        let mut call = vec![5_000; 100];
        call[50] = STAGE_BYTES + 1;
        call.extend([3 * STAGE_BYTES / 2, 5_000, 5_000]);
        same_bytes_either_way(limits, &[10], &call);
    }

    /// A call that fills the buffer several times within one segment:
    /// batches must not be cut where the buffer ends. (Found by review: a
    /// batch near the buffer's end was sealed short.)
    #[test]
    fn a_call_larger_than_the_buffer_cuts_no_batch_short() {
        let limits = segments_of(8 << 20);
        let call: Vec<usize> = (0..2_500).map(|i| 1_000 + (i * 37) % 500).collect();
        same_bytes_either_way(limits, &[10], &call);
    }

    /// A call that starts in an open batch whose next record lies past the
    /// writer's claim on the file (`append_run` hands it back though the
    /// batch has room): the record must join that batch, as on the map
    /// path. (Found by review: the batch was sealed short.)
    #[test]
    fn a_call_continues_the_open_batch_past_the_writers_claim() {
        let limits = segments_of(8 << 20);
        for prefix in [240, 250, 255, 260] {
            same_bytes_either_way(limits, &vec![1_000; prefix], &[1_000; 400]);
        }
    }

    #[test]
    fn small_records_and_short_calls_go_through_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::create(dir.path(), topic(), 0, LIMITS).unwrap();
        let before = staged_writes();
        // Records under STAGED_MIN_RECORD, however many...
        append_call(&log, 0, &[100; 300]).unwrap();
        // ...and a call of larger ones under STAGED_MIN_CALL.
        append_call(&log, 300, &[2_000; 100]).unwrap();
        assert_eq!(staged_writes(), before);
        check_mixed(&log, &[vec![100; 300], vec![2_000; 100]].concat());
    }

    /// Bytes written with `pwrite` ask the pager for no zeros ahead: they
    /// would only be overwritten, while both writes take turns on the
    /// file's lock.
    #[test]
    fn a_staged_call_asks_for_no_zeros_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let limits = segments_of(64 << 20);
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let before = staged_writes();
        append_call(&log, 0, &[1_000; 4_000]).unwrap();
        assert!(staged_writes() > before);
        let st = log.state.lock();
        assert!(st.active.write_pos > 4 << 20);
        assert_eq!(st.active.prefaulted, 0, "nothing requested ahead");
    }

    #[test]
    fn a_staged_call_killed_before_its_first_header_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let limits = segments_of(4 << 20);
        let log = PartitionLog::create(dir.path(), topic(), 0, limits).unwrap();
        let prefix = [10, 20, 700];
        append_mixed(&log, 0, &prefix);
        // Sealed, so that the call's first records do not go into the open
        // batch through the map.
        log.flush().unwrap();
        let (path, end) = {
            let st = log.state.lock();
            (st.active.seg.log_path.clone(), st.active.write_pos)
        };
        // The process dies after the batches but the first one's header
        // were written.
        io::faults::crash_next_staged_write();
        let call = [3_000; 200];
        assert!(append_call(&log, prefix.len(), &call).is_err());
        assert_eq!(log.end_offset(), prefix.len() as u64, "no record taken");
        check_mixed(&log, &prefix);
        assert!(
            append_call(&log, prefix.len(), &[10]).is_err(),
            "read-only after a failed write"
        );
        drop(log);
        let data = std::fs::read(&path).unwrap();
        let after = &data[end as usize..];
        let marker = [(prefix.len() + 1) as u8; 8];
        assert!(
            after[..BATCH_HEADER_BYTES].iter().all(|&b| b == 0)
                && after.windows(8).any(|w| w == marker),
            "the batches are on disk after the log's end, with no header before them"
        );
        let log = reopen_with(dir.path(), limits);
        check_mixed(&log, &prefix);
        append_call(&log, prefix.len(), &call).unwrap();
        check_mixed(&log, &[&prefix[..], &call].concat());
    }

    /// Staged calls rolling 16 KiB segments, one synced and one not: a
    /// power loss keeps exactly the synced one.
    #[cfg(feature = "power-loss-sim")]
    #[test]
    fn a_power_loss_keeps_the_staged_calls_that_were_synced() {
        use super::super::tests::{cut_power_and_check, recorded_log};
        let (base, rec, log, limits) = recorded_log();
        let call = |from: u64| {
            let values: Vec<Vec<u8>> = (from..from + 300).map(|i| vec![i as u8; 1000]).collect();
            let before = staged_writes();
            log.append(
                values
                    .iter()
                    .zip(from..)
                    .map(|(v, i)| (RecordParts::new(Some(b"k"), Some(v), &[]), 1_000 + i as i64)),
                |_, _| {},
            )
            .unwrap();
            assert!(staged_writes() > before, "staged");
        };
        call(0);
        log.sync().unwrap();
        call(300);
        cut_power_and_check(base.path(), rec, log, limits, 300, "after a staged call");
    }

    /// A small xorshift generator for the differential test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    /// A record of the differential test: key, value, headers, timestamp.
    type Owned = (Vec<u8>, Vec<u8>, Vec<(String, bytes::Bytes)>, i64);

    /// A value size clustered around the thresholds that decide where
    /// batches are cut: the staging minimum, the batch target, the 64 KiB
    /// of a record written alone, the buffer's size.
    fn value_size(rng: &mut Rng, max: usize) -> usize {
        let size = match rng.below(20) {
            0 => rng.below(100) as usize,
            1 => 400 + rng.below(200) as usize,
            2 => BATCH_TARGET_BYTES as usize - 150 + rng.below(150) as usize,
            3 => 64 * 1024 - 150 + rng.below(200) as usize,
            4 if rng.below(6) == 0 => STAGE_BYTES - 200 + rng.below(260) as usize,
            5 => 20_000 + rng.below(100_000) as usize,
            _ => 500 + rng.below(3_000) as usize,
        };
        size.min(max)
    }

    /// `n` records, some with a header, timestamps mostly rising.
    fn random_call(rng: &mut Rng, n: usize, max: usize, ts: &mut i64) -> Vec<Owned> {
        (0..n)
            .map(|i| {
                let len = value_size(rng, max);
                let key = format!("k{}", rng.below(1000)).into_bytes();
                let headers = match rng.below(4) {
                    0 => vec![(
                        "h".to_string(),
                        bytes::Bytes::from(vec![i as u8; rng.below(300) as usize]),
                    )],
                    _ => Vec::new(),
                };
                *ts += rng.below(50) as i64;
                let t = match rng.below(10) {
                    0 => (*ts - rng.below(5_000) as i64).max(0),
                    _ => *ts,
                };
                (key, vec![(rng.next() % 251) as u8; len], headers, t)
            })
            .collect()
    }

    fn parts(call: &[Owned]) -> Vec<(RecordParts<'_>, i64)> {
        call.iter()
            .map(|(k, v, h, t)| (RecordParts::new(Some(k), Some(v), h), *t))
            .collect()
    }

    /// One seed of [`staged_and_mapped_calls_cut_the_same_batches`].
    fn differential(seed: u64) {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let segment_bytes = [
            96 * 1024,
            300 * 1024 + 13,
            1_100_000,
            3 * 1024 * 1024 + 7,
            8 << 20,
        ][rng.below(5) as usize];
        let limits = segments_of(segment_bytes);
        let max = (segment_bytes as usize - 400).min(STAGE_BYTES + 100);
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let staged = PartitionLog::create(da.path(), topic(), 0, limits).unwrap();
        let mapped = PartitionLog::create(db.path(), topic(), 0, limits).unwrap();
        let (mut ts, mut epoch, mut sequence) = (1_000i64, 0i32, 0i32);
        for step in 0..12 {
            match rng.below(8) {
                0 => {
                    epoch += 1 + rng.below(2) as i32;
                    staged.set_leader_epoch(epoch);
                    mapped.set_leader_epoch(epoch);
                }
                1 => {
                    // An idempotent producer's send leaves its batch open.
                    let n = 1 + rng.below(4);
                    let values: Vec<Vec<u8>> =
                        (0..n).map(|_| vec![7u8; rng.below(900) as usize]).collect();
                    let records: Vec<_> = values
                        .iter()
                        .map(|v| (RecordParts::new(Some(b"p"), Some(v), &[]), ts))
                        .collect();
                    let batch = format::ProducerBatch {
                        producer_id: 9,
                        epoch: 0,
                        base_sequence: sequence,
                        attributes: 0,
                    };
                    sequence += records.len() as i32;
                    staged
                        .append_idempotent(batch, &records, |_, _| {})
                        .unwrap();
                    mapped
                        .append_idempotent(batch, &records, |_, _| {})
                        .unwrap();
                }
                2 | 3 => {
                    // Small calls, which may leave a batch open.
                    let n = 1 + rng.below(30) as usize;
                    let call = random_call(&mut rng, n, 2_000.min(max), &mut ts);
                    let p = parts(&call);
                    staged.append(p.iter().copied(), |_, _| {}).unwrap();
                    mapped.append(p.iter().copied(), |_, _| {}).unwrap();
                }
                _ => {
                    let n = 50 + rng.below(900) as usize;
                    let call = random_call(&mut rng, n, max, &mut ts);
                    let p = parts(&call);
                    let (mut got, mut want) = (Vec::new(), Vec::new());
                    let before = staged_writes();
                    let end = staged
                        .append(p.iter().copied(), |o, t| got.push((o, t)))
                        .unwrap();
                    let was_staged = staged_writes() > before;
                    // A size hint of 0 never stages.
                    let unstaged = p.iter().copied().filter(|_| true);
                    let before = staged_writes();
                    let want_end = mapped.append(unstaged, |o, t| want.push((o, t))).unwrap();
                    assert_eq!(staged_writes(), before, "through the map");
                    assert_eq!(end, want_end, "seed {seed} step {step}: end offsets");
                    assert_eq!(got, want, "seed {seed} step {step}: offsets handed out");
                    if was_staged {
                        // A staged call ends sealed (see the module docs).
                        mapped.flush().unwrap();
                    }
                }
            }
            assert_eq!(
                staged.epochs(),
                mapped.epochs(),
                "seed {seed} step {step}: epochs"
            );
        }
        let (got, want) = (
            staged.read(0, usize::MAX).unwrap(),
            mapped.read(0, usize::MAX).unwrap(),
        );
        assert_eq!(got.len(), want.len(), "seed {seed}: records");
        for (x, y) in got.iter().zip(&want) {
            assert_eq!(
                (x.offset(), x.timestamp(), x.key(), x.value()),
                (y.offset(), y.timestamp(), y.key(), y.value()),
                "seed {seed}"
            );
        }
        let (staged_dir, mapped_dir) = (staged.dir.clone(), mapped.dir.clone());
        staged.close().unwrap();
        mapped.close().unwrap();
        assert_same_files(
            &segment_files(&staged_dir),
            &segment_files(&mapped_dir),
            &format!("through the map (seed {seed})"),
        );
    }

    /// Random sequences of calls (value sizes at the thresholds, headers,
    /// timestamps back in time, leader epochs changing, an idempotent
    /// producer's batch left open, small calls leaving a batch open) on
    /// segments of several sizes, into two partitions: one appends each
    /// call as it comes, the other with a size hint of 0, which keeps it on
    /// the map. Offsets, epochs, reads and every segment and index file
    /// must be the same. `BROOK_STAGED_SEEDS=N` runs N seeds (default 12).
    #[test]
    fn staged_and_mapped_calls_cut_the_same_batches() {
        let seeds: u64 = std::env::var("BROOK_STAGED_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12);
        for seed in 0..seeds {
            differential(seed);
        }
    }

    /// A staged call ends with its last batch sealed: the next append
    /// starts a batch of its own, as after a flush on the map path.
    #[test]
    fn a_staged_call_ends_sealed() {
        let limits = segments_of(8 << 20);
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let staged = PartitionLog::create(da.path(), topic(), 0, limits).unwrap();
        let mapped = PartitionLog::create(db.path(), topic(), 0, limits).unwrap();
        let values: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; 1_000]).collect();
        let call = || {
            values
                .iter()
                .map(|v| (RecordParts::new(Some(b"k"), Some(v), &[]), 1_000))
        };
        let before = staged_writes();
        staged.append(call(), |_, _| {}).unwrap();
        assert!(staged_writes() > before, "staged");
        let before = staged_writes();
        mapped.append(call().filter(|_| true), |_, _| {}).unwrap();
        assert_eq!(staged_writes(), before, "through the map");
        assert!(
            mapped.state.lock().active.open.is_some(),
            "the map leaves a batch open"
        );
        assert!(
            staged.state.lock().active.open.is_none(),
            "staging does not"
        );
        mapped.flush().unwrap();
        for log in [&staged, &mapped] {
            let tail = [(RecordParts::new(Some(b"k"), Some(b"tail"), &[]), 1_000)];
            log.append(tail, |_, _| {}).unwrap();
        }
        let (staged_dir, mapped_dir) = (staged.dir.clone(), mapped.dir.clone());
        staged.close().unwrap();
        mapped.close().unwrap();
        assert_same_files(
            &segment_files(&staged_dir),
            &segment_files(&mapped_dir),
            "through the map, flushed after the call",
        );
    }

    /// The value of the record at offset `o` in the tests below.
    fn value_at(o: u64) -> Vec<u8> {
        let len = match o % 7 {
            0 => 100,
            1 => 20_000,
            2 => 70_000,
            _ => 600 + (o % 1_500) as usize,
        };
        let mut v = vec![(o % 251) as u8; len];
        v[..8].copy_from_slice(&o.to_be_bytes());
        v
    }

    /// Readers (mostly near the log's end), syncs, seals and retention run
    /// against a writer whose calls mostly stage: every record read is the
    /// one written at its offset, and a reopen agrees.
    #[test]
    fn readers_see_only_whole_staged_records() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            segment_bytes: 3 << 20,
            retention_bytes: Some(12 << 20),
            ..LIMITS
        };
        let log = Arc::new(PartitionLog::create(dir.path(), topic(), 0, limits).unwrap());
        let done = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for r in 0..2u64 {
            let (log, done) = (log.clone(), done.clone());
            threads.push(std::thread::spawn(move || {
                let (mut rounds, mut x) = (0u64, r + 1);
                while !done.load(Ordering::Relaxed) {
                    let (start, end) = (log.start_offset(), log.end_offset());
                    if end == 0 {
                        continue;
                    }
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let from = match x % 3 {
                        0 => start + (x >> 20) % (end - start),
                        _ => end.saturating_sub((x >> 20) % 50).max(start),
                    };
                    let read = match log.read(from, 200) {
                        Ok(read) => read,
                        // Retention moved the start past it.
                        Err(crate::error::Error::OffsetOutOfRange { .. }) => continue,
                        Err(e) => panic!("read from {from}: {e}"),
                    };
                    for (i, m) in read.iter().enumerate() {
                        assert_eq!(m.offset(), from + i as u64);
                        assert!(
                            m.value() == Some(&value_at(m.offset())[..]),
                            "value at {}",
                            m.offset()
                        );
                    }
                    rounds += 1;
                }
                rounds
            }));
        }
        {
            let (log, done) = (log.clone(), done.clone());
            threads.push(std::thread::spawn(move || {
                let mut rounds = 0;
                while !done.load(Ordering::Relaxed) {
                    log.sync().unwrap();
                    log.seal_if_idle(std::time::Duration::ZERO);
                    rounds += 1;
                }
                rounds
            }));
        }
        let started = std::time::Instant::now();
        let (mut next, before) = (0u64, staged_writes());
        while started.elapsed() < std::time::Duration::from_secs(2) {
            let n = if next % 5 == 0 { 3 } else { 400 };
            let values: Vec<Vec<u8>> = (next..next + n).map(value_at).collect();
            let records = values
                .iter()
                .map(|v| (RecordParts::new(Some(b"k"), Some(v), &[]), 5));
            next += n;
            assert_eq!(log.append(records, |_, _| {}).unwrap(), next);
        }
        done.store(true, Ordering::Relaxed);
        for t in threads {
            assert!(t.join().unwrap() > 0, "every thread ran");
        }
        assert!(staged_writes() > before, "calls were staged");
        drop(log);
        let log = reopen_with(dir.path(), limits);
        assert_eq!(log.end_offset(), next);
        for m in &log.read(log.start_offset(), usize::MAX).unwrap() {
            assert!(
                m.value() == Some(&value_at(m.offset())[..]),
                "value at {}",
                m.offset()
            );
        }
    }

    /// A staged call that fails part way (no descriptor left to open the
    /// segment's file or the next one's) leaves a consistent log: what it
    /// wrote reads back, a retry appends the rest after it, and a reopen
    /// finds the same.
    #[test]
    fn a_staged_call_failing_part_way_leaves_a_consistent_log() {
        let limits = segments_of(300 * 1024);
        let values: Vec<Vec<u8>> = (0..1_000u64)
            .map(value_at)
            .filter(|v| v.len() < 50_000)
            .collect();
        let call = |from: usize| {
            values[from..]
                .iter()
                .map(|v| (RecordParts::new(Some(b"k"), Some(v), &[]), 5))
        };
        // The second segment's base offset, from a partition that does not
        // fail.
        let second = {
            let d = tempfile::tempdir().unwrap();
            let log = PartitionLog::create(d.path(), topic(), 0, limits).unwrap();
            log.append(call(0), |_, _| {}).unwrap();
            let st = log.state.lock();
            st.closed
                .get(1)
                .map_or(st.active.seg.base_offset, |s| s.base_offset)
        };
        let next = |ext: &str| format!("{second:020}.{ext}");
        let first = "00000000000000000000.log".to_string();
        let cases = [
            vec![next("log")],
            vec![next("index")],
            vec![first.clone()],
            vec![first.clone(); 2],
            vec![first; 3],
            vec![next("log"); 2],
        ];
        let disarm = |fails: &[String]| {
            for f in fails {
                let _ = io::faults::take_open_failure(Path::new(f));
            }
        };
        for (case, fails) in cases.iter().enumerate() {
            let d = tempfile::tempdir().unwrap();
            let log = PartitionLog::create(d.path(), topic(), 0, limits).unwrap();
            for f in fails {
                io::faults::fail_next_open(f);
            }
            let result = log.append(call(0), |_, _| {});
            let end = log.end_offset();
            let check = |log: &PartitionLog, n: u64| {
                let read = log.read(0, usize::MAX).unwrap();
                assert_eq!(read.len() as u64, n, "case {case}");
                for (i, m) in read.iter().enumerate() {
                    assert!(m.value() == Some(&values[i][..]), "case {case}: value {i}");
                }
            };
            check(&log, end);
            disarm(fails);
            let total = match result {
                Ok(_) => end,
                Err(_) => log.append(call(end as usize), |_, _| {}).unwrap(),
            };
            assert_eq!(total, values.len() as u64, "case {case}");
            check(&log, total);
            drop(log);
            check(&reopen_with(d.path(), limits), total);
        }
    }
}
