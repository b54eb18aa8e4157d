//! `brook`: the operator's tool for a brook log directory, modelled on
//! Kafka's command-line tools (`kafka-topics`, `kafka-console-producer` /
//! `kcat -P`, `kafka-console-consumer` / `kcat -C`, `kafka-consumer-groups`,
//! `kafka-dump-log`).
//!
//! Everything but `dump` and `verify` goes through the public API
//! (`brook::Log`); those two read the files through `brook::inspect`
//! without opening the log, so they report what is on disk, unrecovered.
//!
//! Errors are printed as one line, `brook: error: ...`, with exit status 1
//! (2 for a command line clap rejects).

mod consume;
mod dump;
mod groups;
mod output;
mod produce;
mod topics;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The operator's tool for a brook log directory.
///
/// A log directory belongs to one process at a time, which holds a lock on
/// it. This tool must not run against a log that a live process holds
/// open: every command then stops with "log directory ... is locked by
/// another open Log". Stop the application first, or work on a copy.
///
/// Errors are one line on stderr and a non-zero exit status. Progress bars
/// (dump, verify) are drawn on stderr only when it is a terminal.
#[derive(Parser, Debug)]
#[command(
    name = "brook",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// The log directory.
    #[arg(short, long, env = "BROOK_DIR", global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List, describe, create and delete topics, or add partitions.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Append records read from stdin: one per line, or key/value pairs
    /// with --key-separator (like `kcat -P`).
    Produce(produce::ProduceArgs),
    /// Print records to stdout: from a consumer group (committing what was
    /// printed), or from an offset or timestamp; as text, JSON lines or hex.
    Consume(consume::ConsumeArgs),
    /// List consumer groups, describe their committed offsets and lag, and
    /// reset their offsets.
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Print segments batch by batch, and their index entries (like
    /// `kafka-dump-log`); --verify also checks every CRC and index entry.
    Dump(dump::DumpArgs),
    /// Check the whole log's integrity: every batch's CRC-32C and records,
    /// offsets across segments, every index entry.
    Verify(dump::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brook: error: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as clap writes them; a rejected command
/// line is one line on stderr, exit status 2.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                2
            } else {
                0
            },
        );
    }
    // clap's message, without the usage and tip paragraphs that follow it.
    let text = e.to_string();
    let message = text.split("\n\n").next().unwrap_or("invalid command line");
    let message = one_line(message.strip_prefix("error: ").unwrap_or(message));
    eprintln!("brook: error: {message} (see 'brook --help')");
    ExitCode::from(2)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<(), CliError> {
    let dir = cli.dir.ok_or_else(|| {
        CliError::Usage("no log directory: pass --dir DIR or set BROOK_DIR".into())
    })?;
    match cli.command {
        Command::Topics(c) => topics::run(&dir, c),
        Command::Produce(a) => produce::run(&dir, a),
        Command::Consume(a) => consume::run(&dir, a),
        Command::Groups(c) => groups::run(&dir, c),
        Command::Dump(a) => dump::dump(&dir, a),
        Command::Verify(a) => dump::verify(&dir, a),
    }
}

/// What a command can fail with.
#[derive(Debug)]
enum CliError {
    Brook(brook::Error),
    Io(std::io::Error),
    Usage(String),
    /// stdout was closed (`brook consume | head`): stop quietly.
    BrokenPipe,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Brook(e) => e.fmt(f),
            CliError::Io(e) => write!(f, "I/O error: {e}"),
            CliError::Usage(s) => f.write_str(s),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<brook::Error> for CliError {
    fn from(e: brook::Error) -> Self {
        CliError::Brook(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Io(e)
        }
    }
}

/// Opens the existing log in `dir` (never creates one: a mistyped path is
/// an error, not a new empty log).
fn open_log(dir: &Path) -> Result<brook::Log, CliError> {
    if !dir.join("topics.json").is_file() {
        return Err(CliError::Usage(format!(
            "no brook log in {} (no topics.json); 'brook topics create' makes one",
            dir.display()
        )));
    }
    open_or_create_log(dir)
}

/// Opens the log in `dir`, creating it if missing.
fn open_or_create_log(dir: &Path) -> Result<brook::Log, CliError> {
    Ok(brook::Log::open(dir)?)
}
