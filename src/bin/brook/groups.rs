//! `brook groups`: list, describe (members, committed offsets, lag),
//! reset-offsets.

use std::io::Write;
use std::path::Path;

use brook::{Log, ResetTo, TopicPartition};
use clap::{ArgGroup, Args, Subcommand};

use crate::{open_log, output, CliError};

#[derive(Subcommand, Debug)]
pub(crate) enum GroupsCommand {
    /// Print the groups that have committed offsets, one a line.
    List,
    /// Print a group's members, and per partition its committed offset,
    /// the end offset and the lag.
    Describe {
        /// The group.
        group: String,
    },
    /// Move a group's committed offsets (the group must have no members).
    ResetOffsets(ResetArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("to").required(true)))]
pub(crate) struct ResetArgs {
    /// The group.
    group: String,
    /// Only this topic's partitions (default: every partition of the topics
    /// the group has offsets for).
    #[arg(long)]
    topic: Option<String>,
    /// Only this partition of --topic.
    #[arg(long, requires = "topic")]
    partition: Option<u32>,
    /// To the first stored offset.
    #[arg(long, group = "to")]
    to_earliest: bool,
    /// To the end (skip everything stored).
    #[arg(long, group = "to")]
    to_latest: bool,
    /// To this offset.
    #[arg(long, group = "to", value_name = "OFFSET")]
    to_offset: Option<u64>,
    /// To the first record with a timestamp at or after this (ms since the
    /// epoch; the end if none).
    #[arg(long, group = "to", value_name = "MS")]
    to_timestamp: Option<i64>,
}

pub(crate) fn run(dir: &Path, command: GroupsCommand) -> Result<(), CliError> {
    let log = open_log(dir)?;
    let mut out = output::stdout();
    match command {
        GroupsCommand::List => {
            for g in log.groups() {
                writeln!(out, "{g}")?;
            }
        }
        GroupsCommand::Describe { group } => {
            if !log.groups().contains(&group) {
                return Err(CliError::Usage(format!(
                    "unknown group {group:?}: it has no members and no committed offsets"
                )));
            }
            describe(&log, &group, &mut out, None)?;
        }
        GroupsCommand::ResetOffsets(a) => {
            let to = if a.to_earliest {
                ResetTo::Earliest
            } else if a.to_latest {
                ResetTo::Latest
            } else if let Some(o) = a.to_offset {
                ResetTo::Offset(o)
            } else if let Some(ts) = a.to_timestamp {
                ResetTo::Timestamp(ts)
            } else {
                unreachable!("clap requires one of the --to options")
            };
            let partitions: Vec<TopicPartition> = match (&a.topic, a.partition) {
                (None, _) => Vec::new(),
                (Some(t), Some(p)) => vec![TopicPartition::new(t.clone(), p)],
                (Some(t), None) => {
                    let topic = log.topic(t)?;
                    (0..topic.partition_count())
                        .map(|p| TopicPartition::new(t.clone(), p))
                        .collect()
                }
            };
            if partitions.is_empty() && !log.groups().contains(&a.group) {
                return Err(CliError::Usage(format!(
                    "unknown group {:?}: name --topic to give it offsets",
                    a.group
                )));
            }
            let g = log.group(&a.group)?;
            g.reset_offsets(&partitions, to)?;
            describe(&log, &a.group, &mut out, a.topic.as_deref())?;
        }
    }
    out.flush()?;
    drop(out);
    log.close()?;
    Ok(())
}

/// Prints the group's members and a table of its partitions (only
/// `topic`'s if given).
fn describe(
    log: &Log,
    group: &str,
    out: &mut impl Write,
    topic: Option<&str>,
) -> Result<(), CliError> {
    let g = log.group(group)?;
    let members = g.members();
    if members.is_empty() {
        writeln!(out, "Group {group} has no active members.")?;
    }
    for m in &members {
        let owned: Vec<String> = m
            .assignment
            .iter()
            .map(|tp| format!("{}-{}", tp.topic, tp.partition))
            .collect();
        writeln!(
            out,
            "Member {} topics: {} partitions: {}",
            m.member_id,
            m.topics.join(","),
            owned.join(",")
        )?;
    }
    let rows: Vec<[String; 6]> = g
        .lag()?
        .into_iter()
        .filter(|l| topic.is_none_or(|t| l.topic_partition.topic == t))
        .map(|l| {
            [
                group.to_owned(),
                l.topic_partition.topic,
                l.topic_partition.partition.to_string(),
                l.committed.map_or("-".to_owned(), |c| c.to_string()),
                l.end_offset.to_string(),
                l.lag.to_string(),
            ]
        })
        .collect();
    let header = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "COMMITTED-OFFSET",
        "END-OFFSET",
        "LAG",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}
