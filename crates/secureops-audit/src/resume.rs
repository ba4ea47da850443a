//! Continuing an existing log after a restart.
//!
//! The new run appends a `start` entry whose `prev` is the hash of the last
//! complete line and whose `seq` follows it, so the series stays one chain
//! and the new signature also covers any unsigned entries a crash left.
//!
//! A torn last line (no trailing newline: the previous run died mid-write)
//! was never acknowledged, so no decision depended on it. Keeping it would
//! leave a malformed line in the middle of the log and make every later
//! `verify` fail; so its bytes are moved to `<path>.torn` (kept as evidence)
//! and the log is truncated to its last complete line. The new `start`
//! entry's `detail` records this.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::chain::{GENESIS, decode_pubkey, fingerprint_of, sha256};
use crate::entry::{Entry, EntryKind, MAX_LINE};
use crate::error::AuditError;
use crate::storage::{highest_rotated, rotated_name};

/// Where the next entry goes in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainHead {
    /// `seq` of the next entry.
    pub next_seq: u64,
    /// Hash of the last line written (`prev` of the next entry).
    pub prev: [u8; 32],
}

impl ChainHead {
    pub(crate) const GENESIS: ChainHead = ChainHead {
        next_seq: 0,
        prev: GENESIS,
    };
}

/// What [`prepare`] found.
pub(crate) struct Resume {
    /// Where to continue.
    pub head: ChainHead,
    /// Highest rotation number in use next to the log.
    pub rotated: u64,
    /// Notes for the `start` entry's `detail` (empty on a fresh log).
    pub notes: Vec<String>,
}

impl Resume {
    /// `true` when an earlier run's chain is continued.
    pub(crate) fn continues(&self) -> bool {
        self.head != ChainHead::GENESIS
    }
}

/// Finds the end of the existing series for `path` (the file itself or, if
/// it is missing or empty, its highest rotated sibling) and repairs a torn
/// tail. Refuses to continue a log started with another key.
pub(crate) fn prepare(path: &Path, key: &VerifyingKey) -> Result<Resume, AuditError> {
    let rotated = highest_rotated(path);
    let mut notes = Vec::new();
    let mut source = path.to_owned();
    let mut head = tail_of(path, key, &mut notes)?;
    if head.is_none() && rotated > 0 {
        // Crashed between rotating the old file away and writing the new one.
        if let Some(sibling) = rotated_name(path, rotated) {
            head = tail_of(&sibling, key, &mut notes)?;
            source = sibling;
        }
    }
    let head = match head {
        Some((head, last_kind)) => {
            if last_kind != EntryKind::Stop {
                notes.push(format!(
                    "previous run of {} ended without a stop entry",
                    source.display()
                ));
            }
            head
        }
        None => ChainHead::GENESIS,
    };
    Ok(Resume { head, rotated, notes })
}

/// The chain head after the last complete line of `path`, or `None` if the
/// file is missing, empty or not a regular file.
fn tail_of(
    path: &Path,
    key: &VerifyingKey,
    notes: &mut Vec<String>,
) -> Result<Option<(ChainHead, EntryKind)>, AuditError> {
    let io_err = |e| AuditError::io(path, e);
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(None);
    }
    let len = meta.len();
    let (last_start, last_end) = find_last_line(&mut file, len).map_err(io_err)?;
    if last_end < len {
        move_torn_tail(path, &mut file, last_end, len, notes)?;
    }
    if last_end == 0 {
        return Ok(None);
    }
    let line = read_range(&mut file, last_start, last_end - 1).map_err(io_err)?;
    let entry = Entry::parse(&line).map_err(|why| AuditError::Resume {
        path: path.to_owned(),
        reason: format!("its last line is not an audit entry ({why}); move the file aside"),
    })?;
    check_key(path, &mut file, key)?;
    Ok(Some((
        ChainHead {
            next_seq: entry.seq.saturating_add(1),
            prev: sha256(&line),
        },
        entry.kind,
    )))
}

/// Offsets of the last complete line: `[start, end)` where `end` is just past
/// its newline (`end == 0` when there is no complete line).
fn find_last_line(file: &mut File, len: u64) -> io::Result<(u64, u64)> {
    let mut chunk = 64 * 1024u64;
    let mut end: Option<u64> = None;
    loop {
        let from = len.saturating_sub(chunk);
        let buf = read_range(file, from, len)?;
        let pos = |limit: u64| -> Option<u64> {
            let upto = usize::try_from(limit - from).ok()?;
            buf.get(..upto)?
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| from + i as u64)
        };
        if end.is_none() {
            end = pos(len).map(|nl| nl + 1);
        }
        match end {
            Some(e) => {
                if let Some(nl) = pos(e - 1) {
                    return Ok((nl + 1, e));
                }
                if from == 0 {
                    return Ok((0, e));
                }
            }
            None if from == 0 => return Ok((0, 0)),
            None => {}
        }
        if chunk > (MAX_LINE as u64) * 4 {
            // A "line" this long cannot be ours.
            return Err(io::Error::other("last line is too long"));
        }
        chunk *= 2;
    }
}

fn read_range(file: &mut File, from: u64, to: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    file.take(to - from).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Where a torn last line of the log at `path` is moved: `<path>.torn`.
pub fn torn_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".torn");
    PathBuf::from(s)
}

/// Saves the bytes after the last newline to `<path>.torn`, then truncates.
fn move_torn_tail(
    path: &Path,
    file: &mut File,
    keep: u64,
    len: u64,
    notes: &mut Vec<String>,
) -> Result<(), AuditError> {
    let torn = read_range(file, keep, len).map_err(|e| AuditError::io(path, e))?;
    let aside = torn_path(path);
    let mut out = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&aside)
        .map_err(|e| AuditError::io(&aside, e))?;
    out.write_all(&torn)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.sync_data())
        .map_err(|e| AuditError::io(&aside, e))?;
    file.set_len(keep)
        .and_then(|()| file.sync_data())
        .map_err(|e| AuditError::io(path, e))?;
    tracing::warn!(
        path = %path.display(),
        bytes = torn.len(),
        saved = %aside.display(),
        "audit log ended with an incomplete line; moved it aside"
    );
    notes.push(format!(
        "moved a torn last line of {} bytes to {}",
        torn.len(),
        aside.display()
    ));
    Ok(())
}

/// Refuses to continue a file whose first entry names another signing key:
/// `verify` would then fail at our `start` entry.
fn check_key(path: &Path, file: &mut File, key: &VerifyingKey) -> Result<(), AuditError> {
    file.seek(SeekFrom::Start(0)).map_err(|e| AuditError::io(path, e))?;
    let mut first = Vec::new();
    BufReader::new(file.take(MAX_LINE as u64 + 1))
        .read_until(b'\n', &mut first)
        .map_err(|e| AuditError::io(path, e))?;
    if first.last() == Some(&b'\n') {
        first.pop();
    }
    let Ok(entry) = Entry::parse(&first) else {
        return Ok(()); // not ours to judge here; `verify` will say what is wrong
    };
    if entry.kind != EntryKind::Start {
        return Ok(());
    }
    let theirs = entry.pubkey.as_deref().and_then(decode_pubkey);
    if theirs.as_ref() != Some(key) {
        return Err(AuditError::Resume {
            path: path.to_owned(),
            reason: format!(
                "it was started with key {}, but the signing key is {}; use the original key or a new log path",
                entry.fingerprint.as_deref().unwrap_or("(unknown)"),
                fingerprint_of(key)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_line(content: &[u8]) -> (u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, content).unwrap();
        let mut f = File::open(&p).unwrap();
        find_last_line(&mut f, content.len() as u64).unwrap()
    }

    #[test]
    fn last_line_offsets() {
        assert_eq!(last_line(b"a\nbb\n"), (2, 5));
        assert_eq!(last_line(b"a\nbb\ncc"), (2, 5));
        assert_eq!(last_line(b"abc\n"), (0, 4));
        assert_eq!(last_line(b"abc"), (0, 0));
        let mut big = vec![b'x'; 200_000];
        big.push(b'\n');
        big.extend_from_slice(&[b'y'; 150_000]);
        big.push(b'\n');
        assert_eq!(last_line(&big), (200_001, 350_002));
    }
}
