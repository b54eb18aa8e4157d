//! `brook dump` and `brook verify`: the files as they are on disk, read
//! through `brook::inspect` under a shared lock, without opening the log.

use std::io::Write;
use std::path::Path;

use brook::inspect::{self, BatchInfo, PartitionFiles, SegmentFile, Tail};
use clap::Args;

use crate::topics::codec_name;
use crate::{output, CliError};

#[derive(Args, Debug)]
pub(crate) struct DumpArgs {
    /// Only this topic (default: every topic and the internal partitions).
    #[arg(long)]
    topic: Option<String>,
    /// Only this partition.
    #[arg(long, requires = "topic")]
    partition: Option<u32>,
    /// Only the segment with this base offset.
    #[arg(long, value_name = "BASE_OFFSET")]
    segment: Option<u64>,
    /// Also print every record (offset, timestamp, key, value, headers).
    #[arg(long)]
    records: bool,
    /// Check every batch's CRC-32C and records and every index entry; the
    /// first problem ends the dump with an error naming file and position.
    #[arg(long)]
    verify: bool,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Only this topic (default: every topic and the internal partitions).
    #[arg(long)]
    topic: Option<String>,
}

/// The partitions of the log in `dir` (only `topic`'s if given), read
/// under the shared lock the caller keeps.
fn partitions(
    dir: &Path,
    topic: Option<&str>,
) -> Result<(inspect::ReadLock, inspect::LogFiles), CliError> {
    if !dir.join("topics.json").is_file() {
        return Err(CliError::Usage(format!(
            "no brook log in {} (no topics.json)",
            dir.display()
        )));
    }
    let lock = inspect::lock(dir)?;
    let mut files = inspect::log_files(dir)?;
    if let Some(t) = topic {
        files.partitions.retain(|p| p.topic == t);
        if files.partitions.is_empty() {
            return Err(brook::Error::UnknownTopic {
                topic: t.to_owned(),
            }
            .into());
        }
    }
    Ok((lock, files))
}

fn total_bytes(parts: &[PartitionFiles]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.segments.iter().map(move |&b| (p, b)))
        .filter_map(|(p, b)| SegmentFile::open(p, b).ok().map(|s| s.len()))
        .sum()
}

pub(crate) fn dump(dir: &Path, a: DumpArgs) -> Result<(), CliError> {
    let (_lock, mut files) = partitions(dir, a.topic.as_deref())?;
    if let Some(p) = a.partition {
        files.partitions.retain(|f| f.partition == p);
        if files.partitions.is_empty() {
            return Err(CliError::Usage(format!(
                "topic {:?} has no partition {p}",
                a.topic.as_deref().unwrap_or_default()
            )));
        }
    }
    let clean = files.clean_shutdown;
    let progress = output::progress(
        total_bytes(&files.partitions),
        "dumping",
        !output::stdout_is_terminal(),
    );
    let mut out = output::stdout();
    if !clean {
        writeln!(
            out,
            "Log {} was not closed cleanly: the last segment of a partition may end \
             unsealed, and its indexes are rebuilt at the next open",
            dir.display()
        )?;
    }
    let mut found_segment = false;
    for part in &files.partitions {
        writeln!(
            out,
            "Partition {}-{} ({})",
            part.topic,
            part.partition,
            part.dir.display()
        )?;
        for name in &part.other_files {
            writeln!(out, "Other file: {name}")?;
        }
        let mut prev_next = None;
        for (i, &base) in part.segments.iter().enumerate() {
            let seg = SegmentFile::open(part, base)?;
            let active = i + 1 == part.segments.len();
            let scan = seg.scan(a.verify, active && !clean);
            let skip = a.segment.is_some_and(|s| s != base);
            if !skip {
                found_segment = true;
                dump_segment(&mut out, &seg, &scan, a.records)?;
                if a.verify {
                    part.check_segment(i, &seg, &scan, prev_next, clean)?;
                } else if let Tail::Damaged(e) = scan.tail {
                    out.flush()?;
                    return Err(e.into());
                }
            }
            prev_next = Some(scan.next_offset.unwrap_or(base));
            progress.inc(seg.len());
        }
    }
    progress.finish_and_clear();
    if let Some(s) = a.segment.filter(|_| !found_segment) {
        return Err(CliError::Usage(format!("no segment with base offset {s}")));
    }
    if a.verify {
        writeln!(
            out,
            "Verified: every CRC-32C, record and index entry is valid"
        )?;
    }
    out.flush()?;
    Ok(())
}

fn dump_segment(
    out: &mut impl Write,
    seg: &SegmentFile,
    scan: &inspect::SegmentScan,
    records: bool,
) -> Result<(), CliError> {
    writeln!(
        out,
        "Dumping {} ({} bytes)",
        seg.log_path.display(),
        seg.len()
    )?;
    writeln!(out, "Starting offset: {}", seg.base_offset)?;
    for b in &scan.batches {
        write_batch(out, b)?;
        if records {
            for r in seg.records(b)? {
                let headers: Vec<String> = r
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k:?}: {}", output::display_bytes(Some(v))))
                    .collect();
                writeln!(
                    out,
                    "| offset: {} timestamp: {} key: {} value: {} headers: [{}]",
                    r.offset,
                    r.timestamp,
                    output::display_bytes(r.key.as_deref()),
                    output::display_bytes(r.value.as_deref()),
                    headers.join(", ")
                )?;
            }
        }
    }
    match &scan.tail {
        Tail::None => {}
        Tail::Unsealed {
            position,
            open_batch_records,
            bytes,
        } => writeln!(
            out,
            "Unsealed tail at position {position}: {bytes} bytes{}, which the next open \
             reseals or truncates",
            open_batch_records
                .map(|n| format!(", an open batch of {n} committed records"))
                .unwrap_or_default()
        )?,
        Tail::Damaged(e) => writeln!(out, "Damage: {e}")?,
    }
    write_index(out, &seg.index_path, seg.offset_index()?, |e| {
        format!("offset: {} position: {}", e.offset, e.position)
    })?;
    write_index(out, &seg.timeindex_path, seg.time_index()?, |e| {
        format!("timestamp: {} offset: {}", e.timestamp, e.offset)
    })?;
    Ok(())
}

fn write_index<E>(
    out: &mut impl Write,
    path: &Path,
    entries: Option<Vec<E>>,
    line: impl Fn(&E) -> String,
) -> std::io::Result<()> {
    let Some(entries) = entries else {
        return writeln!(out, "No index file {}", path.display());
    };
    writeln!(
        out,
        "Dumping {} ({} entries)",
        path.display(),
        entries.len()
    )?;
    for e in &entries {
        writeln!(out, "{}", line(e))?;
    }
    Ok(())
}

fn write_batch(out: &mut impl Write, b: &BatchInfo) -> std::io::Result<()> {
    let control = match b.control {
        Some(true) => "commit",
        Some(false) => "abort",
        None => "none",
    };
    writeln!(
        out,
        "baseOffset: {} lastOffset: {} count: {} position: {} size: {} \
         baseTimestamp: {} maxTimestamp: {} compression: {} transactional: {} \
         control: {control} producerId: {} producerEpoch: {} baseSequence: {} \
         leaderEpoch: {} crc: {:#010x} {}",
        b.base_offset,
        b.last_offset,
        b.count,
        b.position,
        b.size,
        b.base_timestamp,
        b.max_timestamp,
        codec_name(b.compression),
        b.transactional,
        b.producer_id,
        b.producer_epoch,
        b.base_sequence,
        b.leader_epoch,
        b.crc,
        if b.crc_ok {
            "(crc ok)"
        } else {
            "(crc MISMATCH)"
        }
    )
}

pub(crate) fn verify(dir: &Path, a: VerifyArgs) -> Result<(), CliError> {
    let (_lock, files) = partitions(dir, a.topic.as_deref())?;
    let clean = files.clean_shutdown;
    let progress = output::progress(total_bytes(&files.partitions), "verifying", true);
    let mut out = output::stdout();
    if !clean {
        writeln!(
            out,
            "Log {} was not closed cleanly: unsealed tails are reported, and the last \
             segments' indexes (rebuilt at the next open) are not checked",
            dir.display()
        )?;
    }
    for part in &files.partitions {
        let checked = part.verify(clean, &mut |bytes| progress.inc(bytes));
        let checked = match checked {
            Ok(c) => c,
            Err(e) => {
                progress.finish_and_clear();
                out.flush()?;
                return Err(e.into());
            }
        };
        let unsealed = if checked.unsealed_bytes > 0 {
            format!(
                ", {} bytes of unsealed tail for the next open to recover",
                checked.unsealed_bytes
            )
        } else {
            String::new()
        };
        progress.suspend(|| {
            writeln!(
                out,
                "{}-{}: ok ({} segments, {} batches, {} records, {} bytes, {} index entries{unsealed})",
                part.topic,
                part.partition,
                checked.segments,
                checked.batches,
                checked.records,
                checked.bytes,
                checked.index_entries
            )
        })?;
    }
    progress.finish_and_clear();
    writeln!(
        out,
        "Verified {} partitions: every CRC-32C, record, offset and index entry is valid",
        files.partitions.len()
    )?;
    out.flush()?;
    Ok(())
}
