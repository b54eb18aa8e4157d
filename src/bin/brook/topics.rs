//! `brook topics`: list, describe, create, delete, add-partitions.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use brook::{CleanupPolicy, Compression, TopicConfig};
use clap::{Args, Subcommand, ValueEnum};

use crate::{open_log, open_or_create_log, output, CliError};

#[derive(Subcommand, Debug)]
pub(crate) enum TopicsCommand {
    /// Print the topics' names, one a line.
    List,
    /// Print each topic's config and each partition's offsets.
    Describe {
        /// Topics to describe (default: all).
        topics: Vec<String>,
    },
    /// Create a topic (and the log directory, if missing).
    Create(CreateArgs),
    /// Delete a topic, its data and its groups' committed offsets.
    Delete {
        /// The topic.
        topic: String,
    },
    /// Grow a topic to a new total number of partitions (never fewer).
    AddPartitions {
        /// The topic.
        topic: String,
        /// The new total.
        #[arg(long, short)]
        partitions: u32,
    },
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// The topic: 1-249 characters of [a-zA-Z0-9._-].
    topic: String,
    /// Number of partitions.
    #[arg(long, short, default_value_t = 1)]
    partitions: u32,
    /// A segment rolls when it would pass this size.
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Delete the oldest segments while a partition is larger than this.
    #[arg(long, value_name = "BYTES")]
    retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,
    /// Largest accepted record (encoded size).
    #[arg(long, value_name = "BYTES")]
    max_record_bytes: Option<usize>,
    /// What happens to old data.
    #[arg(long, value_enum, default_value_t = Policy::Delete)]
    cleanup_policy: Policy,
    /// Codec of new batches (a codec needs its cargo feature).
    #[arg(long, value_enum, default_value_t = Codec::None)]
    compression: Codec,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Policy {
    Delete,
    Compact,
    #[value(name = "compact,delete")]
    CompactDelete,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

pub(crate) fn run(dir: &Path, command: TopicsCommand) -> Result<(), CliError> {
    let mut out = output::stdout();
    match command {
        TopicsCommand::List => {
            let log = open_log(dir)?;
            for t in log.topics() {
                writeln!(out, "{t}")?;
            }
            out.flush()?;
            log.close()?;
        }
        TopicsCommand::Describe { topics } => {
            let log = open_log(dir)?;
            let names = if topics.is_empty() {
                log.topics()
            } else {
                topics
            };
            for name in names {
                let t = log.topic(&name)?;
                let c = t.config();
                writeln!(
                    out,
                    "Topic: {name}\tPartitions: {}\tCleanupPolicy: {}\tCompression: {}\t\
                     SegmentBytes: {}\tRetentionBytes: {}\tRetentionMs: {}\tMaxRecordBytes: {}",
                    c.partitions,
                    policy_name(c.cleanup_policy),
                    codec_name(c.compression),
                    c.segment_bytes,
                    c.retention_bytes
                        .map_or("none".to_owned(), |b| b.to_string()),
                    c.retention
                        .map_or("none".to_owned(), |d| d.as_millis().to_string()),
                    c.max_record_bytes,
                )?;
                for p in 0..t.partition_count() {
                    let part = t.partition(p)?;
                    writeln!(
                        out,
                        "\tPartition: {p}\tStartOffset: {}\tEndOffset: {}\tLastStableOffset: {}",
                        part.start_offset(),
                        part.end_offset(),
                        part.last_stable_offset()
                    )?;
                }
            }
            out.flush()?;
            log.close()?;
        }
        TopicsCommand::Create(a) => {
            let log = open_or_create_log(dir)?;
            let mut c = TopicConfig::default()
                .partitions(a.partitions)
                .cleanup_policy(match a.cleanup_policy {
                    Policy::Delete => CleanupPolicy::Delete,
                    Policy::Compact => CleanupPolicy::Compact,
                    Policy::CompactDelete => CleanupPolicy::CompactAndDelete,
                })
                .compression(match a.compression {
                    Codec::None => Compression::None,
                    Codec::Gzip => Compression::Gzip,
                    Codec::Snappy => Compression::Snappy,
                    Codec::Lz4 => Compression::Lz4,
                    Codec::Zstd => Compression::Zstd,
                })
                .retention_bytes(a.retention_bytes)
                .retention(a.retention_ms.map(Duration::from_millis));
            if let Some(b) = a.segment_bytes {
                c = c.segment_bytes(b);
            }
            if let Some(b) = a.max_record_bytes {
                c = c.max_record_bytes(b);
            }
            let t = log.create_topic(&a.topic, c)?;
            log.close()?;
            writeln!(
                out,
                "created topic {} with {} partition(s)",
                a.topic,
                t.partition_count()
            )?;
        }
        TopicsCommand::Delete { topic } => {
            let log = open_log(dir)?;
            log.delete_topic(&topic)?;
            log.close()?;
            writeln!(out, "deleted topic {topic}")?;
        }
        TopicsCommand::AddPartitions { topic, partitions } => {
            let log = open_log(dir)?;
            log.add_partitions(&topic, partitions)?;
            log.close()?;
            writeln!(out, "topic {topic} now has {partitions} partitions")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn policy_name(p: CleanupPolicy) -> &'static str {
    match p {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactAndDelete => "compact,delete",
        _ => "unknown",
    }
}

pub(crate) fn codec_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
        _ => "unknown",
    }
}
