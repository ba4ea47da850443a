//! `[audit]` settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When appended lines are forced to stable storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// `fsync` (data sync) after every entry.
    Always,
    /// Lines are answered once written; a background data sync covers
    /// every group written meanwhile (default).
    #[default]
    Batch,
}

/// Which entries carry a signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignPolicy {
    /// Every entry is signed.
    Each,
    /// Only the last entry of each group commit (and every start/stop) is
    /// signed; one signature covers the whole group (default).
    #[default]
    Batch,
}

/// How to open an [`crate::AuditLog`]. Deserialises from the `[audit]`
/// table (unknown keys are errors); `version` is set by the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The log file (JSON Lines). Created with mode 0600 if missing.
    pub path: PathBuf,
    /// The ed25519 private key (PKCS#8 PEM). Created with mode 0600 if missing.
    pub signing_key: PathBuf,
    /// When to sync.
    pub fsync: FsyncPolicy,
    /// What to sign.
    pub sign: SignPolicy,
    /// Rotate to a new file once the current one would exceed this many
    /// bytes; 0 never rotates.
    pub rotate_bytes: u64,
    /// Folder of the log's anchor (see the crate docs, "Anchor"), created
    /// with mode 0700; it must lie where whoever might tamper with the log
    /// cannot write. `None`: no anchor.
    pub anchor_dir: Option<PathBuf>,
    /// Software version recorded in `start` entries.
    #[serde(skip)]
    pub version: String,
    /// Added to the `start` entry's `detail` (e.g. what a confined run
    /// lets through besides the guard).
    #[serde(skip)]
    pub start_note: Option<String>,
}

impl AuditConfig {
    /// A config with the given files and default policies.
    pub fn new(path: impl Into<PathBuf>, signing_key: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            signing_key: signing_key.into(),
            ..AuditConfig::default()
        }
    }
}

impl Default for AuditConfig {
    /// The built-in default: `secureops-audit.jsonl` and
    /// `secureops-audit.key` in the current folder, batch fsync and signing,
    /// no anchor.
    fn default() -> Self {
        AuditConfig {
            path: PathBuf::from("secureops-audit.jsonl"),
            signing_key: PathBuf::from("secureops-audit.key"),
            fsync: FsyncPolicy::default(),
            sign: SignPolicy::default(),
            rotate_bytes: 0,
            anchor_dir: None,
            start_note: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}
