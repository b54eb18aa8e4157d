//! Output helpers: a buffered stdout, byte renderings, progress bars.

use std::io::{BufWriter, IsTerminal, Stdout};

use indicatif::{ProgressBar, ProgressStyle};

/// A buffered stdout; callers flush before anything depends on the output
/// having been written (a commit, an exit).
pub(crate) fn stdout() -> BufWriter<Stdout> {
    BufWriter::with_capacity(64 * 1024, std::io::stdout())
}

/// Lowercase hex of `b`.
pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// Bytes as a JSON value: a string when they are UTF-8, else
/// `{"hex": "..."}`; `null` for none.
pub(crate) fn json_bytes(b: Option<&[u8]>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => serde_json::Value::String(s.to_owned()),
            Err(_) => serde_json::json!({ "hex": hex(b) }),
        },
    }
}

/// Bytes for a human: quoted and escaped like a Rust string literal when
/// UTF-8, else `0x` and hex; `null` for none.
pub(crate) fn display_bytes(b: Option<&[u8]>) -> String {
    match b {
        None => "null".to_owned(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("0x{}", hex(b)),
        },
    }
}

/// A progress bar over `total` bytes on stderr, drawn only when stderr is a
/// terminal (and `also_if` holds): none when piped or redirected.
pub(crate) fn progress(total: u64, message: &str, also_if: bool) -> ProgressBar {
    if !(also_if && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    pb.set_message(message.to_owned());
    pb
}

/// Whether stdout is a terminal (progress bars then stay off while output
/// is printed there, so they do not mix).
pub(crate) fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// A delimiter or separator from the command line, with `\n`, `\t`, `\0`
/// and `\\` unescaped.
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}
