//! The anchor: a small signed record, kept outside the log's folder, of how
//! far a log reached (see the crate docs, "Anchor").
//!
//! One JSON file per log, named by [`anchor_path`], canonical like a log
//! line:
//!
//! ```json
//! {"fingerprint":"SHA256:…","head":"<64 hex>","log":"/abs/audit.jsonl","pubkey":"<base64>","seq":41,"sig":"<base64>"}
//! ```
//!
//! `seq` is the last entry known durable, `head` the lower-hex SHA-256 of
//! that entry's line as written (the `prev` the next entry carries), `log`
//! the log's canonical absolute path and `pubkey` the log's key, which also
//! signs the anchor: `sig` is ed25519 over [`ANCHOR_DOMAIN`] ‖ u64 BE
//! length of `log` ‖ `log` ‖ u64 BE `seq` ‖ `head` (32 bytes) ‖ `pubkey` (32
//! bytes).
//!
//! The writer updates it on its own thread ([`Anchorer`]), after the lines
//! it names are synced, so it never claims more than the disk holds and
//! decisions never wait for it. A failed update is logged (once per
//! episode) and otherwise ignored: the log is the record, the anchor only a
//! check on it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::chain::{decode_pubkey, decode_sig, fingerprint_of, hex_into, parse_hex32, pubkey_b64, sha256};
use crate::error::AuditError;
use crate::resume::ChainHead;

/// Domain separation prefix of an anchor's signed message; differs from
/// [`crate::DOMAIN`], so a log signature is never an anchor signature.
pub const ANCHOR_DOMAIN: &[u8] = b"secureops-audit-anchor-v1\0";

/// Largest anchor file read; one is a few hundred bytes plus the path.
const MAX_ANCHOR_FILE: u64 = 64 * 1024;

/// Shortest time between two anchor updates while the log is written (the
/// final one at close is written at once). Bounds the anchor's file system
/// work to what the background sync does anyway.
const ANCHOR_INTERVAL: Duration = Duration::from_millis(5);

/// The anchor file of `log` in `anchor_dir`: the first 32 hex digits of
/// sha256 of the path's bytes, plus `.json`. `log` should be canonical
/// (absolute, symlinks resolved), as the writer records it.
pub fn anchor_path(anchor_dir: &Path, log: &Path) -> PathBuf {
    let mut name = String::with_capacity(64);
    hex_into(&sha256(log.as_os_str().as_bytes()), &mut name);
    name.truncate(32);
    name.push_str(".json");
    anchor_dir.join(name)
}

/// The path the anchor of `log` is filed under: canonical when the file
/// exists, else merely absolute.
pub(crate) fn canonical_log_path(log: &Path) -> PathBuf {
    fs::canonicalize(log)
        .or_else(|_| std::path::absolute(log))
        .unwrap_or_else(|_| log.to_owned())
}

/// Why an anchor file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The anchor file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Not an anchor: bad JSON, missing or bad fields.
    #[error("{}: not an audit anchor: {detail}", path.display())]
    Malformed {
        /// The anchor file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The signature does not verify against the key the anchor names.
    #[error("{}: bad anchor signature: the anchor was modified after it was signed, or forged", path.display())]
    BadSignature {
        /// The anchor file.
        path: PathBuf,
    },
    /// The anchor filed under this log's name was made for another log
    /// (copied there).
    #[error("{}: the anchor is for another log ({names})", path.display())]
    OtherLog {
        /// The anchor file.
        path: PathBuf,
        /// The log it names.
        names: String,
    },
}

/// A verified anchor: its signature checks against the key it names. Read
/// one with [`Anchor::load`] or [`Anchor::find`]; check a log against it with
/// [`crate::verify_with_anchor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    file: PathBuf,
    log: String,
    seq: u64,
    head: [u8; 32],
    key: VerifyingKey,
}

/// The file's fields, in canonical (sorted) order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorJson<'a> {
    fingerprint: std::borrow::Cow<'a, str>,
    head: std::borrow::Cow<'a, str>,
    log: std::borrow::Cow<'a, str>,
    pubkey: std::borrow::Cow<'a, str>,
    seq: u64,
    sig: std::borrow::Cow<'a, str>,
}

/// The exact message an anchor's signature covers.
fn message(log: &str, seq: u64, head: &[u8; 32], key: &VerifyingKey) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ANCHOR_DOMAIN.len() + 8 + log.len() + 8 + 64);
    msg.extend_from_slice(ANCHOR_DOMAIN);
    msg.extend_from_slice(&(log.len() as u64).to_be_bytes());
    msg.extend_from_slice(log.as_bytes());
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(head);
    msg.extend_from_slice(key.as_bytes());
    msg
}

impl Anchor {
    /// Reads `path` and checks its signature against the key it names.
    ///
    /// # Errors
    /// The file cannot be read ([`AnchorError::Io`], also when it is
    /// missing), is not an anchor, or its signature fails.
    pub fn load(path: &Path) -> Result<Anchor, AnchorError> {
        let io_err = |source| AnchorError::Io {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|f| f.take(MAX_ANCHOR_FILE).read_to_end(&mut bytes))
            .map_err(io_err)?;
        Self::parse(path, &bytes)
    }

    /// The anchor of the log at `log` in `anchor_dir` (see [`anchor_path`];
    /// `log` is canonicalized first), or `None` when there is none.
    ///
    /// # Errors
    /// As [`Anchor::load`] (but a missing file is `Ok(None)`), and
    /// [`AnchorError::OtherLog`] when the file names another log.
    pub fn find(anchor_dir: &Path, log: &Path) -> Result<Option<Anchor>, AnchorError> {
        let log = canonical_log_path(log);
        let path = anchor_path(anchor_dir, &log);
        let anchor = match Self::load(&path) {
            Ok(anchor) => anchor,
            Err(AnchorError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if anchor.log != log.to_string_lossy() {
            return Err(AnchorError::OtherLog {
                path,
                names: anchor.log,
            });
        }
        Ok(Some(anchor))
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Anchor, AnchorError> {
        let bad = |detail: &str| AnchorError::Malformed {
            path: path.to_owned(),
            detail: detail.to_owned(),
        };
        let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let json: AnchorJson<'_> = serde_json::from_slice(text).map_err(|e| bad(&e.to_string()))?;
        let key = decode_pubkey(&json.pubkey).ok_or_else(|| bad("pubkey is not an ed25519 public key"))?;
        if json.fingerprint != fingerprint_of(&key) {
            return Err(bad("fingerprint does not match pubkey"));
        }
        let head = parse_hex32(&json.head).ok_or_else(|| bad("head is not 64 lower-case hex digits"))?;
        let sig = decode_sig(&json.sig).ok_or_else(|| bad("sig is not base64 of 64 bytes"))?;
        if key
            .verify_strict(&message(&json.log, json.seq, &head, &key), &sig)
            .is_err()
        {
            return Err(AnchorError::BadSignature { path: path.to_owned() });
        }
        Ok(Anchor {
            file: path.to_owned(),
            log: json.log.into_owned(),
            seq: json.seq,
            head,
            key,
        })
    }

    /// The file this anchor was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The log it was made for (canonical path, as the writer recorded it).
    pub fn log(&self) -> &str {
        &self.log
    }

    /// `seq` of the last entry it records.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// SHA-256 of that entry's line as written.
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// The log's key, which signed the anchor.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Fingerprint of [`Anchor::key`] (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.key)
    }
}

/// Before a writer continues the log at `log` (whose chain ends at `head`):
/// the log must reach and match what its anchor in `anchor_dir` records,
/// else it was cut back or rewritten while no guard ran, and continuing
/// (which moves the anchor on) would bury that. An anchor behind the log
/// is fine: updates trail the log.
pub(crate) fn check_resume(
    anchor_dir: &Path,
    log: &Path,
    key: &VerifyingKey,
    head: ChainHead,
) -> Result<(), AuditError> {
    let refuse = |anchor: &Path, reason: String| AuditError::Anchor {
        path: log.to_owned(),
        anchor: anchor.to_owned(),
        reason,
    };
    let anchor = match Anchor::find(anchor_dir, log) {
        Ok(Some(anchor)) => anchor,
        Ok(None) => return Ok(()),
        // Unreadable is no stronger a sign than missing (whoever can do
        // one can do the other); the writes will fail and say so too.
        Err(AnchorError::Io { path, source }) => {
            tracing::error!(anchor = %path.display(), error = %source,
                "cannot read the audit log's anchor; the log is not checked against it");
            return Ok(());
        }
        Err(e) => {
            let file = anchor_path(anchor_dir, &canonical_log_path(log));
            return Err(refuse(&file, e.to_string()));
        }
    };
    let file = anchor.file();
    if anchor.key() != key {
        return Err(refuse(
            file,
            format!(
                "the anchor was signed by key {}, but the signing key is {}",
                anchor.fingerprint(),
                fingerprint_of(key)
            ),
        ));
    }
    let Some(last) = head.next_seq.checked_sub(1) else {
        return Err(refuse(
            file,
            format!(
                "the log is missing or empty, but its anchor records entries up to seq {}: the log was deleted",
                anchor.seq()
            ),
        ));
    };
    if last < anchor.seq() {
        return Err(refuse(
            file,
            format!(
                "the log ends at seq {last}, but its anchor records seq {}: the log was cut back",
                anchor.seq()
            ),
        ));
    }
    if last == anchor.seq() && head.prev != anchor.head() {
        return Err(refuse(
            file,
            format!("entry seq {last} is not the one its anchor records: the log was rewritten"),
        ));
    }
    Ok(())
}

/// A point of the chain an anchor can record: the last entry of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    /// Its `seq`.
    pub seq: u64,
    /// SHA-256 of its line.
    pub head: [u8; 32],
}

/// Writes one log's anchor file.
struct AnchorFile {
    key: SigningKey,
    verifying: VerifyingKey,
    pubkey: String,
    fingerprint: String,
    log: String,
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    /// Highest `seq` written.
    written: Option<u64>,
    /// In a failure episode (logged once).
    failing: bool,
}

impl AnchorFile {
    /// Writes the anchor for `point`: temp file, then rename over the old
    /// one, so a reader sees the old or the new anchor, never a mix. With
    /// `durable` the data and the rename are synced too (close); updates are
    /// not, as they only ever follow the log's own sync (see [`Anchorer`]).
    fn store(&self, point: Point, durable: bool) -> io::Result<()> {
        let mut head = String::with_capacity(64);
        hex_into(&point.head, &mut head);
        let sig = self
            .key
            .sign(&message(&self.log, point.seq, &point.head, &self.verifying));
        let json = AnchorJson {
            fingerprint: (&*self.fingerprint).into(),
            head: head.into(),
            log: (&*self.log).into(),
            pubkey: (&*self.pubkey).into(),
            seq: point.seq,
            sig: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig.to_bytes()).into(),
        };
        let mut bytes = serde_json::to_vec(&json).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut file = match self.create_tmp() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
                self.create_tmp()?
            }
            other => other?,
        };
        let written = file
            .write_all(&bytes)
            .and_then(|()| if durable { file.sync_data() } else { Ok(()) });
        drop(file);
        if let Err(e) = written.and_then(|()| fs::rename(&self.tmp, &self.path)) {
            let _ = fs::remove_file(&self.tmp);
            return Err(e);
        }
        if durable && let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "could not sync the anchor folder");
        }
        Ok(())
    }

    /// A fresh temp file, mode 0600 (one writer per log: the log is locked).
    fn create_tmp(&self) -> io::Result<File> {
        match fs::remove_file(&self.tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.tmp)
    }
}

/// What the anchor thread is told.
#[derive(Default)]
struct State {
    /// The newest durable point not yet written.
    pending: Option<Point>,
    /// The thread waits for work (not sitting out the interval): a post
    /// must wake it.
    idle: bool,
    exit: bool,
}

/// Keeps one log's anchor up to date on its own thread: the syncer posts
/// each durable point ([`Anchorer::post`], which never blocks on I/O), the
/// thread writes the newest one at most every [`ANCHOR_INTERVAL`]; open and
/// close write theirs at once ([`Anchorer::flush`]).
pub(crate) struct Anchorer {
    state: Mutex<State>,
    cond: Condvar,
    file: Mutex<AnchorFile>,
}

impl Anchorer {
    /// An anchorer for the log at `log` (canonical path) in `dir`, signed
    /// with the log's `key`.
    pub(crate) fn new(dir: &Path, log: &Path, key: SigningKey) -> Anchorer {
        let path = anchor_path(dir, log);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let verifying = key.verifying_key();
        Anchorer {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            file: Mutex::new(AnchorFile {
                pubkey: pubkey_b64(&verifying),
                fingerprint: fingerprint_of(&verifying),
                verifying,
                key,
                log: log.to_string_lossy().into_owned(),
                dir: dir.to_owned(),
                path,
                tmp: PathBuf::from(tmp),
                written: None,
                failing: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands a durable point to the thread (the newest wins).
    pub(crate) fn post(&self, point: Point) {
        let mut st = self.lock();
        if st.pending.is_some_and(|p| p.seq >= point.seq) {
            return;
        }
        st.pending = Some(point);
        if st.idle {
            self.cond.notify_all();
        }
    }

    /// Writes `point` now, on the caller's thread, synced.
    pub(crate) fn flush(&self, point: Point) {
        {
            let mut st = self.lock();
            if st.pending.is_some_and(|p| p.seq <= point.seq) {
                st.pending = None;
            }
        }
        self.write(point, true);
    }

    /// Lets the thread write what is pending and exit.
    pub(crate) fn shutdown(&self) {
        self.lock().exit = true;
        self.cond.notify_all();
    }

    fn write(&self, point: Point, durable: bool) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if file.written.is_some_and(|w| w > point.seq) || (file.written == Some(point.seq) && !durable) {
            return;
        }
        match file.store(point, durable) {
            Ok(()) => {
                file.written = Some(point.seq);
                if file.failing {
                    file.failing = false;
                    tracing::warn!(anchor = %file.path.display(), "audit anchor writes work again");
                }
            }
            Err(e) => {
                if !file.failing {
                    file.failing = true;
                    tracing::error!(anchor = %file.path.display(), log = %file.log, error = %e,
                        "cannot update the audit log's anchor; decisions go on (the log is the record), \
                         but a log cut back later may go unnoticed");
                }
            }
        }
    }

    /// The thread: writes the newest posted point, at most every
    /// [`ANCHOR_INTERVAL`], until [`Anchorer::shutdown`].
    pub(crate) fn run(self: Arc<Self>) {
        let mut last: Option<Instant> = None;
        loop {
            let point = {
                let mut st = self.lock();
                loop {
                    if st.pending.is_some() {
                        let left = last.and_then(|t| (t + ANCHOR_INTERVAL).checked_duration_since(Instant::now()));
                        match left {
                            Some(left) if !st.exit => {
                                st = self
                                    .cond
                                    .wait_timeout(st, left)
                                    .map(|(guard, _)| guard)
                                    .unwrap_or_else(|e| e.into_inner().0);
                            }
                            _ => break st.pending.take(),
                        }
                    } else if st.exit {
                        return;
                    } else {
                        st.idle = true;
                        st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
                        st.idle = false;
                    }
                }
            };
            if let Some(point) = point {
                last = Some(Instant::now());
                self.write(point, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_anchor_loads_and_edits_fail() {
        let dir = tempfile::tempdir().unwrap();
        let anchors = dir.path().join("a/b");
        let log = dir.path().join("x.jsonl");
        let key = SigningKey::from_bytes(&[3; 32]);
        let anchorer = Anchorer::new(&anchors, &log, key.clone());
        let point = Point {
            seq: 7,
            head: sha256(b"line"),
        };
        anchorer.flush(point);
        let path = anchor_path(&anchors, &log);
        assert_eq!(path.file_name().unwrap().len(), 32 + 5);
        let anchor = Anchor::load(&path).unwrap();
        assert_eq!((anchor.seq(), anchor.head()), (7, point.head));
        assert_eq!(anchor.key(), &key.verifying_key());
        assert_eq!(anchor.log(), log.to_str().unwrap());
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(&anchors)), (0o600, 0o700));

        // Older points never overwrite newer ones.
        anchorer.flush(Point { seq: 3, head: [1; 32] });
        assert_eq!(Anchor::load(&path).unwrap().seq(), 7);

        let text = fs::read_to_string(&path).unwrap();
        let edited = text.replace("\"seq\":7", "\"seq\":9");
        fs::write(&path, edited).unwrap();
        assert!(matches!(Anchor::load(&path), Err(AnchorError::BadSignature { .. })));
        fs::write(&path, b"{}").unwrap();
        assert!(matches!(Anchor::load(&path), Err(AnchorError::Malformed { .. })));
    }

    #[test]
    fn the_thread_writes_the_newest_point_and_exits() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.jsonl");
        let anchorer = Arc::new(Anchorer::new(dir.path(), &log, SigningKey::from_bytes(&[3; 32])));
        let thread = std::thread::spawn({
            let a = Arc::clone(&anchorer);
            move || a.run()
        });
        for seq in 1..=50 {
            anchorer.post(Point { seq, head: [0; 32] });
        }
        anchorer.shutdown();
        thread.join().unwrap();
        let anchor = Anchor::load(&anchor_path(dir.path(), &log)).unwrap();
        assert_eq!(anchor.seq(), 50);
    }
}
