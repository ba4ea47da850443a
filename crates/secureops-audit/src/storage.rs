//! Where committed lines go. The writer only sees this trait, so tests can
//! inject write and sync failures without a full disk.
//!
//! Failure model: bytes appended since the last [`Storage::commit`] are
//! *pending*. A failed group is rolled back by truncating the file to the
//! committed length, so the file always ends with the last line whose append
//! was acknowledged, and the in-memory chain head stays valid. If the
//! truncation fails too, the storage stays dirty and retries it before the
//! next append (which fails if it still cannot truncate).
//!
//! With fsync=batch the data sync runs on another thread (see `pipe`), through
//! a [`SyncFn`] for the current file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Forces the current file's data to stable storage; callable from another
/// thread while appends continue.
pub(crate) type SyncFn = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// An append-only log file with explicit commit and rollback.
pub(crate) trait Storage: Send + 'static {
    /// Bytes of the current file that belong to committed groups.
    fn committed_len(&self) -> u64;
    /// Appends bytes (pending until [`Storage::commit`]).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Forces appended bytes to stable storage.
    fn sync(&mut self) -> io::Result<()>;
    /// Marks everything appended so far as committed.
    fn commit(&mut self);
    /// Drops pending bytes (truncates back to the committed length).
    fn rollback(&mut self) -> io::Result<()>;
    /// Truncates back to `len` (≤ the committed length), e.g. to the last
    /// durable group after a failed sync.
    fn rollback_to(&mut self, len: u64) -> io::Result<()>;
    /// A sync handle for the current file.
    fn sync_handle(&mut self) -> io::Result<SyncFn>;
    /// Moves the current (committed, clean) file aside and continues in a new
    /// empty file. On error the caller continues wherever the storage ended up.
    fn rotate(&mut self) -> io::Result<()>;
    /// The current file, for messages.
    fn path(&self) -> &Path;
    /// Lets go of the file for good (the log is closed or abandoned): its
    /// lock is released at once, so the next writer can start. Later
    /// appends fail.
    fn release(&mut self) {}
}

/// The real thing: one file opened `O_APPEND`, mode 0600 when created, and
/// locked (see [`open_append`]).
pub(crate) struct FileStorage {
    path: PathBuf,
    file: Option<Arc<File>>,
    committed: u64,
    pending: u64,
    dirty: bool,
    /// Highest `n` of the rotated siblings `<stem>.<n>.<ext>`.
    rotated: u64,
    /// [`Storage::release`]d: never open the file again.
    released: bool,
}

impl FileStorage {
    /// Opens (creating and locking) `path` for appending. `rotated` is the
    /// highest existing rotation number (see [`rotated_name`]).
    #[cfg(test)]
    pub(crate) fn open(path: &Path, rotated: u64) -> io::Result<FileStorage> {
        Self::with_file(path, open_append(path)?, rotated)
    }

    /// Continues in `file`, opened by [`open_append`] (before the tail of the
    /// log was repaired, so that no other writer was at it meanwhile).
    pub(crate) fn with_file(path: &Path, file: File, rotated: u64) -> io::Result<FileStorage> {
        let len = file_len(&file)?;
        Ok(FileStorage {
            path: path.to_owned(),
            file: Some(Arc::new(file)),
            committed: len,
            pending: 0,
            dirty: false,
            rotated,
            released: false,
        })
    }

    fn file(&mut self) -> io::Result<&Arc<File>> {
        if self.released {
            return Err(io::Error::other("the audit log file was let go (closed)"));
        }
        if self.file.is_none() {
            // A rotation left us without a file: start the new one now.
            let file = open_append(&self.path)?;
            self.committed = file_len(&file)?;
            self.file = Some(Arc::new(file));
        }
        self.file.as_ref().ok_or_else(|| io::Error::other("log file not open"))
    }
}

/// Opens `path` with `O_APPEND`, creating it with mode 0600, and takes an
/// exclusive `flock` on it (regular files only), so a second writer fails
/// with [`io::ErrorKind::WouldBlock`] instead of interleaving its chain
/// with ours. The lock goes with the last descriptor, or on
/// [`Storage::release`].
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() {
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(io::Error::from)?;
        if meta.len() == 0 {
            // Make the new directory entry durable too; best effort.
            sync_parent(path);
        }
    }
    Ok(file)
}

/// The file's length (0 for non-regular files such as `/dev/full`).
fn file_len(file: &File) -> io::Result<u64> {
    let meta = file.metadata()?;
    Ok(if meta.is_file() { meta.len() } else { 0 })
}

fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not sync directory");
    }
}

impl Storage for FileStorage {
    fn committed_len(&self) -> u64 {
        self.committed
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.dirty && self.pending == 0 {
            // A previous rollback failed: the file may end with a torn group.
            self.rollback()?;
        }
        self.dirty = true;
        // `&File` is `Write`; the syncer thread holds another reference.
        self.file()?.as_ref().write_all(bytes)?;
        self.pending += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file()?.sync_data()
    }

    fn commit(&mut self) {
        self.committed += self.pending;
        self.pending = 0;
        self.dirty = false;
    }

    fn rollback(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.pending = 0;
        let committed = self.committed;
        self.file()?.set_len(committed)?;
        self.dirty = false;
        Ok(())
    }

    fn rollback_to(&mut self, len: u64) -> io::Result<()> {
        self.committed = len.min(self.committed);
        self.dirty = true;
        self.rollback()
    }

    fn sync_handle(&mut self) -> io::Result<SyncFn> {
        let file = Arc::clone(self.file()?);
        Ok(Arc::new(move || file.sync_data()))
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next =
            rotated_name(&self.path, self.rotated + 1).ok_or_else(|| io::Error::other("log path has no file name"))?;
        if next.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", next.display()),
            ));
        }
        fs::rename(&self.path, &next)?;
        self.rotated += 1;
        // From here on the old file is done, whatever happens next.
        self.file = None;
        self.committed = 0;
        self.pending = 0;
        self.dirty = false;
        self.file()?;
        Ok(())
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn release(&mut self) {
        self.released = true;
        if let Some(file) = self.file.take() {
            // The syncer may still hold the descriptor for a last sync: unlock
            // explicitly rather than wait for it to go.
            if let Err(e) = rustix::fs::flock(&*file, rustix::fs::FlockOperation::Unlock) {
                tracing::debug!(path = %self.path.display(), error = %e, "could not unlock the audit log");
            }
        }
    }
}

/// `dir/name.jsonl` -> `dir/name.<n>.jsonl`; `dir/name` -> `dir/name.<n>`.
pub(crate) fn rotated_name(path: &Path, n: u64) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let rotated = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{n}.{ext}"),
        _ => format!("{name}.{n}"),
    };
    Some(path.with_file_name(rotated))
}

/// Highest `n` for which a rotated sibling of `path` exists (0 if none).
pub(crate) fn highest_rotated(path: &Path) -> u64 {
    rotated_files(path).last().map_or(0, |(n, _)| *n)
}

/// The rotated siblings of the log at `path` (`<stem>.<n>.<ext>`, see
/// [`rotated_name`]) that exist, oldest (lowest `n`) first.
pub fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, Some(ext)),
        _ => (name, None),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let parse = |file: &str| -> Option<u64> {
        let rest = file.strip_prefix(stem)?.strip_prefix('.')?;
        let digits = match ext {
            Some(ext) => rest.strip_suffix(ext)?.strip_suffix('.')?,
            None => rest,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((parse(e.file_name().to_str()?)?, e.path())))
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        assert_eq!(
            rotated_name(Path::new("/a/log.jsonl"), 3).unwrap(),
            PathBuf::from("/a/log.3.jsonl")
        );
        assert_eq!(rotated_name(Path::new("log"), 1).unwrap(), PathBuf::from("log.1"));
        assert_eq!(
            rotated_name(Path::new(".hidden"), 2).unwrap(),
            PathBuf::from(".hidden.2")
        );
    }

    #[test]
    fn finds_highest_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        assert_eq!(highest_rotated(&path), 0);
        for n in [1, 2, 10] {
            fs::write(rotated_name(&path, n).unwrap(), b"").unwrap();
        }
        fs::write(dir.path().join("x.old.jsonl"), b"").unwrap();
        assert_eq!(highest_rotated(&path), 10);
    }
}
