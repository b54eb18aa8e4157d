//! `brook consume`: records to stdout, from a group or an offset/timestamp.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use brook::{ConsumerConfig, IsolationLevel, Message, OffsetReset, TopicPartition};
use clap::{Args, ValueEnum};

use crate::{open_log, output, CliError};

/// How long one poll waits for records.
const POLL_WAIT: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Read as a member of this consumer group: start at its committed
    /// offsets (--reset where none) and commit what was printed.
    #[arg(short, long, conflicts_with_all = ["offset", "from_timestamp"])]
    group: Option<String>,
    /// With --group: where to start a partition the group has no committed
    /// offset for.
    #[arg(long, value_enum, default_value_t = Reset::Earliest, requires = "group")]
    reset: Reset,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    partition: Option<u32>,
    /// Start at this offset (each partition read), or `beginning` / `end`.
    #[arg(short, long, value_name = "OFFSET", conflicts_with = "from_timestamp")]
    offset: Option<String>,
    /// Start at the first record with a timestamp at or after this (ms since
    /// the epoch).
    #[arg(short = 't', long, value_name = "MS")]
    from_timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(short = 'n', long, value_name = "N")]
    max_messages: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end
    /// (the end offsets when the command started).
    #[arg(short, long)]
    follow: bool,
    /// Output format. text: the value (after the key and --key-separator
    /// if given) and the delimiter; hex: the same, key and value hex-encoded;
    /// json: one object a line with topic, partition, offset, timestamp,
    /// key, value, headers (bytes that are not UTF-8 as {"hex": ...}).
    #[arg(short = 'F', long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// text and hex: print the key, then this, before the value.
    #[arg(short = 'K', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// text and hex: what ends each record (default: a newline).
    #[arg(short = 'D', long, default_value = "\\n", value_name = "DELIM")]
    delimiter: String,
    /// Skip records of aborted and still-open transactions.
    #[arg(long)]
    read_committed: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
    Hex,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Reset {
    Earliest,
    Latest,
    /// Fail for a partition without a committed offset.
    None,
}

pub(crate) fn run(dir: &Path, a: ConsumeArgs) -> Result<(), CliError> {
    let log = open_log(dir)?;
    let topic = log.topic(&a.topic)?;
    let partitions: Vec<u32> = match a.partition {
        Some(p) => {
            topic.partition(p)?;
            vec![p]
        }
        None => (0..topic.partition_count()).collect(),
    };
    let tps: Vec<TopicPartition> = partitions
        .iter()
        .map(|&p| TopicPartition::new(a.topic.clone(), p))
        .collect();
    // Where reading stops unless --follow: the end when the command started.
    let mut ends = BTreeMap::new();
    for tp in &tps {
        let p = topic.partition(tp.partition)?;
        let end = if a.read_committed {
            p.last_stable_offset()
        } else {
            p.end_offset()
        };
        ends.insert(tp.clone(), end);
    }

    let isolation = if a.read_committed {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let group = a.group.clone();
    let config = ConsumerConfig::new(group.clone().unwrap_or_else(|| "brook-cli".into()))
        .enable_auto_commit(false)
        .isolation_level(isolation)
        .auto_offset_reset(match a.reset {
            Reset::Earliest => OffsetReset::Earliest,
            Reset::Latest => OffsetReset::Latest,
            Reset::None => OffsetReset::None,
        });
    let mut c = log.consumer_with(config)?;
    match &group {
        // A single partition is read with the group's offsets but without
        // joining it; the whole topic by subscribing, as a member.
        Some(_) if a.partition.is_some() => c.assign(&tps)?,
        Some(_) => c.subscribe(&[a.topic.as_str()])?,
        None => {
            c.assign(&tps)?;
            for tp in &tps {
                match (&a.offset, a.from_timestamp) {
                    (_, Some(ts)) => c.seek_to_timestamp(tp, ts)?,
                    (Some(o), None) if o == "end" => c.seek_to_end(std::slice::from_ref(tp))?,
                    (Some(o), None) if o != "beginning" => {
                        let offset = o.parse::<u64>().map_err(|_| {
                            CliError::Usage(format!(
                                "offset {o:?} is not a number, `beginning` or `end`"
                            ))
                        })?;
                        c.seek(tp, offset)?;
                    }
                    _ => c.seek_to_beginning(std::slice::from_ref(tp))?,
                }
            }
        }
    }

    let delimiter = output::unescape(&a.delimiter);
    let key_separator = a.key_separator.as_deref().map(output::unescape);
    let mut out = output::stdout();
    let mut printed = 0u64;
    let mut commit: BTreeMap<TopicPartition, u64> = BTreeMap::new();
    loop {
        let msgs = c.poll(POLL_WAIT)?;
        for m in &msgs {
            if a.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            write_message(&mut out, m, a.format, key_separator.as_deref(), &delimiter)?;
            printed += 1;
            commit.insert(
                TopicPartition::new(m.topic(), m.partition()),
                m.offset() + 1,
            );
        }
        // Commit only what reached stdout.
        out.flush()?;
        if group.is_some() && !commit.is_empty() {
            let offsets: Vec<(TopicPartition, u64)> =
                std::mem::take(&mut commit).into_iter().collect();
            c.commit_offsets(&offsets)?;
        }
        if a.max_messages.is_some_and(|max| printed >= max) {
            break;
        }
        if !a.follow && caught_up(&mut c, &ends)? {
            break;
        }
    }
    c.close()?;
    log.close()?;
    Ok(())
}

/// Whether every partition read is assigned and positioned at or past the
/// end it had when the command started.
fn caught_up(
    c: &mut brook::Consumer,
    ends: &BTreeMap<TopicPartition, u64>,
) -> Result<bool, CliError> {
    let assigned = c.assignment();
    for (tp, &end) in ends {
        if !assigned.contains(tp) || c.position(tp)? < end {
            return Ok(false);
        }
    }
    Ok(true)
}

fn write_message(
    out: &mut impl Write,
    m: &Message,
    format: Format,
    key_separator: Option<&[u8]>,
    delimiter: &[u8],
) -> Result<(), CliError> {
    match format {
        Format::Json => {
            let headers: Vec<serde_json::Value> = m
                .headers()
                .map(|(k, v)| serde_json::json!([k, output::json_bytes(Some(v))]))
                .collect();
            let line = serde_json::json!({
                "topic": m.topic(),
                "partition": m.partition(),
                "offset": m.offset(),
                "timestamp": m.timestamp(),
                "key": output::json_bytes(m.key()),
                "value": output::json_bytes(m.value()),
                "headers": headers,
            });
            writeln!(out, "{line}")?;
        }
        Format::Text | Format::Hex => {
            let hex = format == Format::Hex;
            if let Some(sep) = key_separator {
                write_field(out, m.key(), hex)?;
                out.write_all(sep)?;
            }
            write_field(out, m.value(), hex)?;
            out.write_all(delimiter)?;
        }
    }
    Ok(())
}

/// A key or value as text (its bytes) or hex; nothing for none.
fn write_field(out: &mut impl Write, b: Option<&[u8]>, hex: bool) -> std::io::Result<()> {
    let b = b.unwrap_or_default();
    if hex {
        out.write_all(output::hex(b).as_bytes())
    } else {
        out.write_all(b)
    }
}
