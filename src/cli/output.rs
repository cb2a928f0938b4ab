//! How the commands print.
//!
//! `println!` panics when standard output is a pipe whose reader has gone
//! (`switchboard send ... | head -1`), and Rust ignores `SIGPIPE`, so
//! nothing else stops the process. Every command prints through [`outln!`]
//! and [`out!`] instead: a closed standard output becomes a
//! [`StdoutClosed`] error, which ends the command and makes the process
//! exit successfully without a word, as `rg` does: the reader took what it
//! wanted. Diagnostics go through [`errln!`], which drops what standard
//! error cannot take (`2>&1 | head -1`), since there is nowhere left to
//! report that.

use std::io::Write as _;

/// Standard output was closed by its reader; the command stops quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub(super) struct StdoutClosed;

/// Writes to standard output: a closed pipe is [`StdoutClosed`], any other
/// failure (a full disk behind a redirect) an error that says so.
pub(super) fn stdout(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// Writes to standard error, dropping what it cannot take.
pub(super) fn stderr(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// `print!` that returns an error instead of panicking (see the module
/// documentation); use it with `?`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!($($arg)*))
    };
}

/// `println!` that returns an error instead of panicking (see the module
/// documentation); use it with `?`.
macro_rules! outln {
    () => {
        $crate::cli::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}
