//! `secureops audit tail FILE [-f]`: a log's entries as `audit show`
//! prints them; with `-f`, new ones as they are appended, across
//! rotations, until Ctrl-C (exit 0).
//!
//! Following polls every [`POLL`] rather than using inotify (`notify`):
//! one `read` and one `stat` per tick cost nothing, a rotation (the file
//! renamed, a new one at the same path) needs the same stat either way,
//! and polling works on every file system (inotify misses changes made
//! over NFS or from another mount namespace). A tenth of a second is well
//! within what a person watching notices.
//!
//! Colour (the decision word) only when stdout is a terminal and
//! `NO_COLOR` is unset: `std::io::IsTerminal` and four ANSI codes, not a
//! terminal crate, since Linux terminals all speak ANSI and the rest is
//! plain text.

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::audit_cmd::Row;

/// How often `-f` looks for new lines and rotations.
const POLL: Duration = Duration::from_millis(100);

/// A partial line longer than this is not an entry (the writer never
/// writes one): it is dropped rather than kept growing.
const MAX_PARTIAL: usize = 2 * secureops_audit::MAX_LINE;

/// Runs `audit tail`.
pub fn tail(path: &Path, follow: bool) -> anyhow::Result<ExitCode> {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut reader = Reader::open(path)?;
    let mut out = crate::out::stdout();
    let printed = reader.drain(&mut out, colour).and_then(|()| out.flush());
    if !follow {
        return finish(printed);
    }
    if let Err(e) = printed {
        return finish(Err(e));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = int.recv() => return Ok(ExitCode::SUCCESS),
                _ = term.recv() => return Ok(ExitCode::SUCCESS),
                () = tokio::time::sleep(POLL) => {
                    let r = reader.poll(&mut out, colour).and_then(|()| out.flush());
                    if r.is_err() {
                        return finish(r);
                    }
                }
            }
        }
    })
}

/// A reader gone away (`| head`) is the end of the listing, not an error.
fn finish(r: std::io::Result<()>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

/// The file being followed, with what was read of it.
struct Reader {
    path: PathBuf,
    file: File,
    /// Device and inode: a rotation puts another file at `path`.
    id: (u64, u64),
    /// Bytes read from `file`.
    pos: u64,
    /// The start of a line not yet complete.
    partial: Vec<u8>,
}

impl Reader {
    fn open(path: &Path) -> anyhow::Result<Reader> {
        Self::open_at(path, path).with_context(|| format!("cannot open {}", path.display()))
    }

    /// Reads `file`, which is (or was) the log at `path`.
    fn open_at(path: &Path, file: &Path) -> std::io::Result<Reader> {
        let file = File::open(file)?;
        let meta = file.metadata()?;
        Ok(Reader {
            path: path.to_owned(),
            file,
            id: (meta.dev(), meta.ino()),
            pos: 0,
            partial: Vec::new(),
        })
    }

    /// Prints every complete line from the current position to the end.
    fn drain(&mut self, out: &mut impl Write, colour: bool) -> std::io::Result<()> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.file.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            self.pos += n as u64;
            self.partial.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
                print_line(&self.partial[start..start + end], out, colour)?;
                start += end + 1;
            }
            self.partial.drain(..start);
            if self.partial.len() > MAX_PARTIAL {
                self.partial.clear();
            }
        }
    }

    /// One tick of `-f`: new lines, then a rotation or a cut-back file.
    fn poll(&mut self, out: &mut impl Write, colour: bool) -> std::io::Result<()> {
        self.drain(out, colour)?;
        match std::fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) != self.id => self.rotated(out, colour),
            Ok(meta) if meta.len() < self.pos => {
                // Cut back (a failed group rolled back, a torn tail moved
                // aside): go on from the new end.
                eprintln!(
                    "secureops: {} was cut back to {} bytes; following from there",
                    self.path.display(),
                    meta.len()
                );
                self.pos = self.file.seek(SeekFrom::Start(meta.len()))?;
                self.partial.clear();
                Ok(())
            }
            // Same file, or none at the path yet (between the rename and
            // the new file's creation): wait for the next tick.
            _ => Ok(()),
        }
    }

    /// Another file is at the path: the one read so far was rotated out,
    /// perhaps with more after it (several rotations in one tick).
    fn rotated(&mut self, out: &mut impl Write, colour: bool) -> std::io::Result<()> {
        // The old file got its last line (the `stop`) before it was
        // renamed: whatever it holds now is all of it.
        self.drain(out, colour)?;
        let Ok(mut next) = Reader::open_at(&self.path, &self.path) else {
            return Ok(());
        };
        // Rotated after ours and before the one now at the path: read
        // whole. (One rotated since we opened it is read next tick.)
        for (id, older) in rotated_after(&self.path, self.id) {
            if id == next.id {
                break;
            }
            if let Ok(mut r) = Reader::open_at(&self.path, &older) {
                r.drain(out, colour)?;
            }
        }
        next.drain(out, colour)?;
        *self = next;
        Ok(())
    }
}

/// The rotated siblings of `path` that come after the one with identity
/// `id`, oldest first, with their identities; none when `id` is not among
/// them.
fn rotated_after(path: &Path, id: (u64, u64)) -> Vec<((u64, u64), PathBuf)> {
    let rotated: Vec<((u64, u64), PathBuf)> = secureops_audit::rotated_files(path)
        .into_iter()
        .filter_map(|(_, p)| {
            let meta = std::fs::metadata(&p).ok()?;
            Some(((meta.dev(), meta.ino()), p))
        })
        .collect();
    match rotated.iter().position(|r| r.0 == id) {
        Some(at) => rotated.into_iter().skip(at + 1).collect(),
        None => Vec::new(),
    }
}

/// Prints one line as `show` does; lines that are not JSON are skipped,
/// as `show` skips them.
fn print_line(line: &[u8], out: &mut impl Write, colour: bool) -> std::io::Result<()> {
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(v) => writeln!(out, "{}", Row::of(&v).text(colour)),
        Err(_) => Ok(()),
    }
}
