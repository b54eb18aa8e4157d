//! The storage engine: segments and partition logs.
//!
//! Data flows one way: a partition log appends into its active segment
//! through the [`io`](crate::io) module; reads share the segments' mapped
//! bytes. Nothing here knows about topics beyond a name for messages and
//! errors.

mod cleaner;
mod group_commit;
mod pager;
mod partition_log;
mod producers;
mod segment;

pub(crate) use producers::{last_sequence, ProducerSnapshot};
#[cfg(any(feature = "fuzzing", feature = "cli"))]
pub(crate) use segment::Scan;
pub(crate) use segment::SegmentMap;
#[cfg(feature = "fuzzing")]
pub(crate) use segment::{
    check_closed_index, offset_lookup, scan_batches, time_floor, IndexBuilder,
};

#[cfg(feature = "cli")]
pub(crate) use partition_log::parse_segment_name;
pub(crate) use partition_log::{
    dir_name, now_ms, CleanState, CompactSettings, CompactionReport, Limits, Notify, OpenHints,
    PartitionLog, ProducerWalk, RecoveryPoint, OPEN_BATCH_LINGER,
};
#[cfg(feature = "cli")]
pub(crate) use segment::{
    file_name, read_offset_entry, read_time_entry, scan_batches_with, INDEX_ENTRY_BYTES,
    TIME_INDEX_ENTRY_BYTES,
};
