//! The storage engine: segments and partition logs.
//!
//! Data flows one way: a partition log appends into its active segment
//! through the [`io`](crate::io) module; reads share the segments' mapped
//! bytes. Nothing here knows about topics beyond a name for messages and
//! errors.

mod cleaner;
mod partition_log;
mod producers;
mod segment;

pub(crate) use producers::{last_sequence, ProducerSnapshot};
pub(crate) use segment::SegmentMap;
#[cfg(feature = "fuzzing")]
pub(crate) use segment::{
    check_closed_index, offset_lookup, scan_batches, time_floor, IndexBuilder, Scan,
};

pub(crate) use partition_log::{
    dir_name, now_ms, CleanState, CompactSettings, CompactionReport, Limits, Notify, OpenHints,
    PartitionLog, ProducerWalk, RecoveryPoint, OPEN_BATCH_LINGER,
};
