//! `brook produce`: records from stdin, like `kcat -P`.

use std::io::{BufRead, Write};
use std::path::Path;

use brook::Record;
use clap::Args;

use crate::{open_log, output, CliError};

/// Records are sent in batches of this many (one `send_batch` each).
const BATCH_RECORDS: usize = 1000;

#[derive(Args, Debug)]
pub(crate) struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Split each line at the first occurrence of this string into key and
    /// value (a line without it is a value with no key), like kcat's -K.
    #[arg(short = 'K', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Record delimiter: one byte, or \n (default), \0, \t.
    #[arg(short = 'D', long, default_value = "\\n", value_name = "DELIM")]
    delimiter: String,
    /// Send every record to this partition (default: keyed records by
    /// murmur2 of the key, like Kafka; others spread over partitions).
    #[arg(short, long)]
    partition: Option<u32>,
    /// A header to add to every record, NAME=VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Timestamp of every record, ms since the epoch (default: now).
    #[arg(long, value_name = "MS")]
    timestamp: Option<i64>,
    /// Key/value pairs: an empty value is a tombstone (for compacted
    /// topics).
    #[arg(long, requires = "key_separator")]
    empty_is_tombstone: bool,
}

pub(crate) fn run(dir: &Path, a: ProduceArgs) -> Result<(), CliError> {
    let delimiter = parse_delimiter(&a.delimiter)?;
    let headers = a
        .headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .ok_or_else(|| CliError::Usage(format!("header {h:?} is not NAME=VALUE")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key_separator = a.key_separator.as_deref().map(output::unescape);
    let log = open_log(dir)?;
    let topic = log.topic(&a.topic)?;
    let make = |line: &[u8]| -> Record {
        let (key, value) = match key_separator.as_deref() {
            Some(sep) => match find(line, sep) {
                Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut r = match key {
            Some(k) if a.empty_is_tombstone && value.is_empty() => Record::tombstone(k),
            Some(k) => Record::new(value).key(k),
            None => Record::new(value),
        };
        for (name, value) in &headers {
            r = r.header(name, value);
        }
        if let Some(p) = a.partition {
            r = r.partition(p);
        }
        if let Some(ts) = a.timestamp {
            r = r.timestamp(ts);
        }
        r
    };
    let mut stdin = std::io::stdin().lock();
    let mut batch = Vec::with_capacity(BATCH_RECORDS);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = stdin.read_until(delimiter, &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&delimiter) {
            line.pop();
        }
        batch.push(make(&line));
        if batch.len() == BATCH_RECORDS {
            topic.send_batch(batch.drain(..))?;
        }
    }
    if !batch.is_empty() {
        topic.send_batch(batch)?;
    }
    // A clean close syncs everything appended: the records are durable
    // when the command exits 0.
    log.close()?;
    std::io::stdout().flush()?;
    Ok(())
}

fn parse_delimiter(s: &str) -> Result<u8, CliError> {
    match output::unescape(s)[..] {
        [b] => Ok(b),
        _ => Err(CliError::Usage(format!(
            "delimiter {s:?} is not one byte (or \\n, \\0, \\t)"
        ))),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
