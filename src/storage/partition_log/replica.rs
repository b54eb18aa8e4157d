//! What a partition log does as a replica in a [`Cluster`](crate::Cluster).
//!
//! - A leader stamps its leader epoch into every batch it writes
//!   ([`set_leader_epoch`](PartitionLog::set_leader_epoch)); the replica's
//!   *leader-epoch cache* (`(epoch, first offset)` pairs) follows from the
//!   batches, so it is rebuilt from the log on open
//!   ([`load_epochs`](PartitionLog::load_epochs)) and can never disagree
//!   with it after a crash.
//! - Followers copy whole, sealed batches from the leader byte for byte
//!   ([`read_batches`](PartitionLog::read_batches) on the leader,
//!   [`append_batches`](PartitionLog::append_batches) on the follower), so
//!   every replica's segments hold the same batches with the same CRCs.
//! - A follower that diverged from a new leader cuts its log back
//!   ([`truncate_to`](PartitionLog::truncate_to)). The cut segment is
//!   rewritten to a new file and renamed over the old one, never truncated
//!   in place: readers may still hold messages mapped from the old bytes,
//!   and shrinking a mapped file would turn their next access into
//!   `SIGBUS`.
//! - Readers see offsets below the replica's high watermark only
//!   ([`set_visible_end`](PartitionLog::set_visible_end)).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{OpenHints, PartitionLog, ProducerWalk, RecoveryPoint, State, COMPRESSING_FILE};
use crate::error::{Error, Result};
use crate::format::{self, BatchHeader};
use crate::io;
use crate::storage::segment::Segment;

impl PartitionLog {
    /// Batches written from now on carry `epoch`; the open batch (of the
    /// previous epoch) is sealed first.
    pub(crate) fn set_leader_epoch(&self, epoch: i32) {
        let mut st = self.state.lock();
        st.seal_open();
        st.leader_epoch = epoch;
    }

    /// Readers see offsets below `end` only (the replica's high watermark).
    pub(crate) fn set_visible_end(&self, end: u64) {
        self.visible_end.store(end, Ordering::Release);
        self.notify_append();
    }

    /// The replica's leader-epoch cache: `(epoch, first offset)` pairs.
    pub(crate) fn epochs(&self) -> Vec<(i32, u64)> {
        self.state.lock().epochs.clone()
    }

    /// Rebuilds the leader-epoch cache from the batches' headers.
    pub(crate) fn load_epochs(&self) -> Result<()> {
        let mut st = self.state.lock();
        st.seal_open();
        let mut epochs: Vec<(i32, u64)> = Vec::new();
        let start = st.start_offset();
        st.walk_batches(start, |h, _| {
            let e = h.leader_epoch;
            if e >= 0 && epochs.last().is_none_or(|&(last, _)| last < e) {
                epochs.push((e, h.base_offset as u64));
            }
            true
        })?;
        st.epochs = epochs;
        Ok(())
    }

    /// Whole sealed batches from the one holding `from` on, up to about
    /// `max_bytes` (at least one batch when there is one): what a follower
    /// fetches. An open batch is sealed first, so a follower never copies
    /// a batch that later grows.
    pub(crate) fn read_batches(&self, from: u64, max_bytes: usize) -> Result<Vec<u8>> {
        let mut st = self.state.lock();
        self.check_readable(&st)?;
        let (start, end) = (st.start_offset(), st.next_offset);
        if from < start || from > end {
            return Err(Error::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.partition,
                offset: from,
                start,
                end,
            });
        }
        if from == end {
            return Ok(Vec::new());
        }
        st.seal_open();
        let mut out = Vec::new();
        st.walk_batches(from, |h, batch| {
            if h.last_offset() < from {
                return true;
            }
            out.extend_from_slice(batch);
            out.len() < max_bytes
        })?;
        Ok(out)
    }

    /// Appends batches a leader wrote (see
    /// [`read_batches`](Self::read_batches)), each checked (CRC-32C) and
    /// starting at or after the log end offset; returns the new log end
    /// offset. Nothing is appended past a batch that fails its check.
    pub(crate) fn append_batches(&self, mut data: &[u8]) -> Result<u64> {
        let mut st = self.state.lock();
        self.check_writable(&st)?;
        st.seal_open();
        let segments_before = st.closed.len();
        let result = (|| {
            while !data.is_empty() {
                let h = BatchHeader::parse(data)
                    .map_err(|e| self.replica_error(st.next_offset, e.0))?;
                let len = h.total_len();
                let batch = data
                    .get(..len)
                    .ok_or_else(|| self.replica_error(st.next_offset, "a batch is cut short"))?;
                format::validate_batch(batch)
                    .map_err(|e| self.replica_error(st.next_offset, e.0))?;
                if (h.base_offset as u64) < st.next_offset {
                    return Err(self.replica_error(
                        st.next_offset,
                        format!("a batch at offset {} overlaps the log", h.base_offset),
                    ));
                }
                st.changed = true;
                st.append_sealed_batch(&self.dir, self.limits, &h, batch)?;
                data = &data[len..];
            }
            Ok(st.next_offset)
        })();
        let rolled = st.closed.len() > segments_before;
        drop(st);
        self.notify_append();
        if rolled && self.has_retention() {
            self.apply_retention(super::now_ms())?;
        }
        result
    }

    /// Cuts the log back so that its end offset is at most `offset` (at
    /// the start of the batch holding `offset`, when that batch starts
    /// below it). The segment holding the cut is rewritten to a new file
    /// that replaces it atomically; later segments are deleted; then the
    /// partition reopens from its files, rebuilding indexes, producer
    /// state and the leader-epoch cache. Returns the new log end offset.
    pub(crate) fn truncate_to(&self, offset: u64) -> Result<u64> {
        let _cleaner = self.cleaner_lock.lock();
        let mut rp = self.sync_lock.lock();
        let mut st = self.state.lock();
        self.check_writable(&st)?;
        if offset >= st.next_offset {
            return Ok(st.next_offset);
        }
        st.seal_open();
        let offset = offset.max(st.start_offset());
        // The segment holding the cut, and the byte position of the cut in it.
        let mut segments: Vec<Arc<Segment>> = st.closed.clone();
        segments.push(Arc::clone(&st.active.seg));
        let i = segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let cut_seg = Arc::clone(&segments[i]);
        let (map, len) = if i + 1 < segments.len() {
            (cut_seg.closed_map()?, cut_seg.closed_len())
        } else {
            (Some(Arc::clone(&st.active.map)), st.active.sealed_end)
        };
        let map = map.ok_or_else(|| self.replica_error(offset, "the segment to cut is gone"))?;
        // SAFETY: the first `len` bytes of the map are sealed batches that
        // nothing changes while we hold the state lock.
        let data = unsafe { std::slice::from_raw_parts(map.ptr(), len as usize) };
        let mut cut = 0usize;
        while cut < data.len() {
            let h = BatchHeader::parse(&data[cut..])
                .map_err(|e| Error::corrupt(&cut_seg.log_path, cut as u64, e.0))?;
            if h.last_offset() >= offset {
                break;
            }
            cut += h.total_len();
        }
        let prefix = data[..cut.min(data.len())].to_vec();
        let point = RecoveryPoint {
            segment: cut_seg.base_offset,
            position: 0,
        };
        let had_producers = !st.producers.is_empty();
        // From the first deletion on, the state in memory no longer matches
        // the files (its active segment may be gone): a failure part way
        // leaves the partition read-only, as a failed fsync does, until a
        // reopen recovers it from what is on disk. Appends would otherwise
        // go into an unlinked file, and syncs would report them durable.
        let rebuilt = (|| -> Result<PartitionLog> {
            for later in &segments[i + 1..] {
                later.mark_deleted();
                later.delete_files()?;
            }
            // A batch being compressed was sealed and finished above; a
            // stale copy must not be put back by the reopen.
            io::remove_file(&self.dir.join(COMPRESSING_FILE))?;
            cut_seg.mark_deleted();
            io::write_atomic(&cut_seg.log_path, &prefix)?;
            io::remove_file(&cut_seg.index_path)?;
            io::remove_file(&cut_seg.timeindex_path)?;
            io::sync_dir(&self.dir)?;
            let fresh = self.reopen_at(point)?;
            if had_producers {
                fresh.restore_producers(None, ProducerWalk::FromOffset(0))?;
            }
            Ok(fresh)
        })();
        let fresh = match rebuilt {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::error!(
                    topic = %self.topic,
                    partition = self.partition,
                    error = %e,
                    "truncation failed part way: the partition is read-only until reopened"
                );
                st.failed = Some((cut_seg.log_path.clone(), format!("truncation failed: {e}")));
                return Err(e);
            }
        };
        let mut new_state: State = fresh.state.into_inner();
        new_state.leader_epoch = st.leader_epoch;
        new_state.compression = st.compression;
        new_state.changed = true;
        new_state.dir_dirty = true;
        // Segments before the cut that rolled since the last sync are
        // still to be fsynced: they stay queued, and the recovery point
        // does not move past them. (Files of the segments deleted above
        // stay queued too: an fsync of an unlinked file is wasted, not
        // wrong, and truncations are rare.)
        new_state.unsynced.append(&mut st.unsynced);
        *st = new_state;
        if (point.segment, point.position) < (rp.segment, rp.position) {
            *rp = point;
        }
        let end = st.next_offset;
        self.durable_offset.fetch_min(end, Ordering::AcqRel);
        self.clean_offset.fetch_min(end, Ordering::AcqRel);
        drop(st);
        drop(rp);
        self.load_epochs()?;
        Ok(end)
    }

    /// This partition opened again from its files in this boot, recovering
    /// from `point`: what a truncation or a restart swaps its state for.
    fn reopen_at(&self, point: RecoveryPoint) -> Result<PartitionLog> {
        let root = self.dir.parent().unwrap_or(&self.dir);
        let hints = OpenHints {
            recovery: point,
            clean: None,
            same_boot: true,
            clean_offset: 0,
        };
        PartitionLog::open(
            root,
            Arc::clone(&self.topic),
            self.partition,
            self.limits,
            hints,
        )
    }

    /// Empties the log and restarts it at `offset` (a follower that
    /// retention on its leader overtook). Readers keep what they hold.
    pub(crate) fn start_over_at(&self, offset: u64) -> Result<()> {
        let _cleaner = self.cleaner_lock.lock();
        let mut rp = self.sync_lock.lock();
        let mut st = self.state.lock();
        self.check_writable(&st)?;
        st.seal_open();
        let mut segments: Vec<Arc<Segment>> = st.closed.clone();
        segments.push(Arc::clone(&st.active.seg));
        for seg in &segments {
            seg.mark_deleted();
            seg.delete_files()?;
        }
        io::remove_file(&self.dir.join(COMPRESSING_FILE))?;
        io::sync_dir(&self.dir)?;
        let point = RecoveryPoint {
            segment: offset,
            position: 0,
        };
        let fresh = self.reopen_at(point)?;
        let mut new_state: State = fresh.state.into_inner();
        new_state.leader_epoch = st.leader_epoch;
        new_state.compression = st.compression;
        new_state.changed = true;
        *st = new_state;
        *rp = point;
        self.durable_offset.store(offset, Ordering::Release);
        self.clean_offset.store(offset, Ordering::Release);
        Ok(())
    }

    /// Deletes closed segments that end at or below `offset` (the leader's
    /// start offset, which retention moved).
    pub(crate) fn trim_below(&self, offset: u64) -> Result<()> {
        let base = {
            let st = self.state.lock();
            let bases: Vec<u64> = st
                .closed
                .iter()
                .map(|s| s.base_offset)
                .chain([st.active.seg.base_offset])
                .collect();
            // The last segment whose start is at or below `offset`: all
            // before it end below `offset`.
            let i = bases.partition_point(|&b| b <= offset).saturating_sub(1);
            bases[i]
        };
        if base > self.start_offset() {
            self.delete_before(base)?;
        }
        Ok(())
    }

    fn check_readable(&self, st: &State) -> Result<()> {
        if st.deleted {
            return Err(self.unknown_topic());
        }
        if st.shut {
            return Err(self.closed_error());
        }
        Ok(())
    }

    fn replica_error(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::corrupt(
            &self.dir,
            offset,
            format!(
                "replicated batch for {}-{} at offset {offset}: {}",
                self.topic,
                self.partition,
                reason.into()
            ),
        )
    }
}

impl State {
    /// Calls `f(header, batch bytes)` for each sealed batch from the
    /// segment holding `from` (and the index entry before it) to the end,
    /// until `f` returns `false`.
    pub(super) fn walk_batches(
        &self,
        from: u64,
        mut f: impl FnMut(&BatchHeader, &[u8]) -> bool,
    ) -> Result<()> {
        let n = self.closed.len();
        let first = self
            .closed
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        let segments = self.closed[first.min(n)..]
            .iter()
            .chain([&self.active.seg])
            .enumerate();
        for (k, seg) in segments {
            let is_active = first + k >= n;
            let (map, len, start) = if is_active {
                let a = &self.active;
                let start = a.ix.lookup(a.seg.base_offset, from).min(a.sealed_end);
                (Some(Arc::clone(&a.map)), a.sealed_end, start)
            } else {
                let start = if seg.base_offset <= from {
                    seg.closed_lookup(from)?.0
                } else {
                    0
                };
                (seg.closed_map()?, seg.closed_len(), start)
            };
            let Some(map) = map else { continue };
            // SAFETY: the first `len` bytes of a segment's map are sealed
            // batches that never change while the state lock is held
            // (closed segments never change at all).
            let data = unsafe { std::slice::from_raw_parts(map.ptr(), len as usize) };
            let mut pos = start as usize;
            while pos < data.len() {
                let h = BatchHeader::parse(&data[pos..])
                    .map_err(|e| Error::corrupt(&seg.log_path, pos as u64, e.0))?;
                let batch = data.get(pos..pos + h.total_len()).ok_or_else(|| {
                    Error::corrupt(&seg.log_path, pos as u64, "batch runs past the segment")
                })?;
                if !f(&h, batch) {
                    return Ok(());
                }
                pos += h.total_len();
            }
        }
        Ok(())
    }

    /// Writes a sealed batch copied from a leader at the end of the log.
    fn append_sealed_batch(
        &mut self,
        dir: &std::path::Path,
        limits: super::Limits,
        h: &BatchHeader,
        batch: &[u8],
    ) -> Result<()> {
        let len = batch.len() as u64;
        loop {
            let a = &self.active;
            let rel_overflow = h.last_offset() - a.seg.base_offset > super::REL_OFFSET_MAX;
            if (a.write_pos > 0 && a.write_pos + len > limits.segment_bytes) || rel_overflow {
                self.roll(dir, limits)?;
                continue;
            }
            break;
        }
        let a = &mut self.active;
        if a.write_pos + len > a.capacity {
            return Err(Error::corrupt(
                &a.seg.log_path,
                a.write_pos,
                format!("a replicated batch of {len} bytes does not fit a segment"),
            ));
        }
        a.make_room(a.write_pos + len)?;
        // SAFETY: `write_pos..write_pos+len` is allocated and within the
        // map's capacity (checked above), beyond everything published to
        // readers; we hold the state lock, so nobody else touches it.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(a.map.mut_ptr().add(a.write_pos as usize), len as usize)
        };
        dst.copy_from_slice(batch);
        a.ix.add_batch(
            a.seg.base_offset,
            a.write_pos,
            len,
            h.last_offset(),
            h.max_timestamp,
        );
        a.write_pos += len;
        a.publish_sealed();
        self.next_offset = h.last_offset() + 1;
        self.producers.replay(h, batch);
        let e = h.leader_epoch;
        if e >= 0 && self.epochs.last().is_none_or(|&(last, _)| last < e) {
            self.epochs.push((e, h.base_offset as u64));
        }
        Ok(())
    }
}
