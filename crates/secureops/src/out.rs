//! Standard output of the commands that print. `println!` panics when the
//! write fails, and a `?` on a failed write ends in "secureops: Broken
//! pipe"; both are wrong when the reader simply stopped reading
//! (`secureops audit show LOG | head -1`). Every line to stdout goes
//! through here instead (`main.rs` warns on `println!`), and this is the
//! one place that decides: a reader gone (EPIPE) ends the process at once,
//! silently, with status [`BROKEN_PIPE_STATUS`], as the default SIGPIPE
//! action does for C tools; any other write error is reported on stderr
//! with status 2.

use std::fmt;
use std::io::{self, Write};

/// Exit status when stdout's reader went away: 141 = 128 + SIGPIPE, what a
/// shell reports for `yes | head -1`, so `set -o pipefail` scripts see the
/// same thing as with coreutils. Nothing is printed.
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// Prints one line to stdout, like `println!` (see the module docs for
/// what happens when that fails).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes `args` and a newline to stdout; on failure ends the process (see
/// the module docs).
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = stdout();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        eprintln!("secureops: cannot write to standard output: {e}");
        std::process::exit(2);
    }
}

/// Writes a daemon's announcement (`listening proxy=…`) and flushes it. A
/// daemon keeps serving when nobody reads its stdout any more, so errors
/// are ignored here.
pub fn announce(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

/// Locked stdout for commands that write many lines (`writeln!(out, …)?`):
/// a reader gone ends the process quietly; other errors are returned.
pub fn stdout() -> Out {
    Out(io::stdout().lock())
}

/// See [`stdout`].
pub struct Out(io::StdoutLock<'static>);

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(gone)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(gone)
    }
}

/// Ends the process quietly when the error says the reader went away;
/// gives any other error back.
fn gone(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_STATUS);
    }
    e
}
