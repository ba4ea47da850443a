//! Errors of the writer side (open, append, close, key handling).

use std::io;
use std::path::PathBuf;

/// Why an audit operation failed. For [`crate::AuditLog::append`], any error
/// means the decision must become a refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading, writing, syncing or creating a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The key file does not hold a usable ed25519 key.
    #[error("{}: not a usable ed25519 key: {detail}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The private key file is readable or writable by group or others.
    #[error(
        "permissions {mode:04o} for '{}' are too open; run: chmod 600 {}",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file we must create already exists (keys are never overwritten).
    #[error("'{}' already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// No randomness was available to generate a key.
    #[error("cannot generate a key: no system randomness: {0}")]
    Random(getrandom::Error),
    /// The existing log cannot be continued (e.g. its last line is not an
    /// entry, or it was started with another key).
    #[error("cannot continue audit log '{}': {reason}", path.display())]
    Resume {
        /// The existing log file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another writer (a second guard) has the log open: two writers would
    /// interleave two chains in one file.
    #[error(
        "audit log '{}' is in use by another writer (another secureops guard is running with it); give each guard its own log",
        path.display()
    )]
    InUse {
        /// The log file.
        path: PathBuf,
    },
    /// The existing log does not reach, or does not match, what its anchor
    /// records (see the crate docs, "Anchor"): it was cut back or rewritten
    /// since, or the anchor was damaged. Continuing would bury that.
    #[error(
        "audit log '{}' does not match its anchor '{}': {reason}; keep both as evidence, then move the anchor aside (or use another log path) to start over",
        path.display(),
        anchor.display()
    )]
    Anchor {
        /// The log file.
        path: PathBuf,
        /// The anchor file.
        anchor: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The finding's line would exceed [`crate::MAX_LINE`] bytes.
    #[error("audit entry too large ({len} bytes)")]
    EntryTooLarge {
        /// Serialised length.
        len: usize,
    },
    /// The log was closed with [`crate::AuditLog::close`].
    #[error("audit log is closed")]
    Closed,
    /// The writer thread is gone (it could not start or it panicked).
    #[error("audit writer is not running")]
    WriterGone,
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}
