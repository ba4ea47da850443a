//! The handle the proxy holds.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::anchor::{self, Anchorer};
use crate::config::AuditConfig;
use crate::encode::Encoder;
use crate::error::AuditError;
use crate::finding::AuditFinding;
use crate::keys::load_or_create_signing_key;
use crate::pipe;
use crate::resume;
use crate::stats::AuditStats;
use crate::storage::{self, FileStorage, Storage};
use crate::writer::{self, Inline, Request, Shared, Writer};

/// Requests waiting for the writer. A full queue makes `append` wait; callers
/// bound that wait with their own timeout (and refuse when it expires).
const QUEUE: usize = 4096;

/// What [`AuditLog::try_append_now`] did: one result per finding, in order
/// (it dereferences to them). Dropping it wakes the log's background sync
/// if that is idle; hold it until the answers are out.
#[must_use = "the results say which decisions are recorded"]
#[derive(Debug)]
pub struct Appended {
    results: Vec<Result<u64, AuditError>>,
    _wake: pipe::SyncWake,
}

impl Appended {
    pub(crate) fn new(results: Vec<Result<u64, AuditError>>, wake: pipe::SyncWake) -> Self {
        Appended { results, _wake: wake }
    }

    /// Every finding failed with `error()`; nothing to sync.
    pub(crate) fn failed(findings: &[AuditFinding], error: impl Fn() -> AuditError) -> Self {
        Self::new(
            findings.iter().map(|_| Err(error())).collect(),
            pipe::SyncWake::default(),
        )
    }

    /// The results, waking the background sync now.
    pub fn into_results(self) -> Vec<Result<u64, AuditError>> {
        self.results
    }
}

impl std::ops::Deref for Appended {
    type Target = [Result<u64, AuditError>];

    fn deref(&self) -> &Self::Target {
        &self.results
    }
}

/// Sees every decision the log has accepted, once its append succeeded
/// (e.g. `secureops run`'s summary of what was refused). Called on the
/// appending task or thread: it must be quick and must not block.
pub trait AuditObserver: Send + Sync + std::fmt::Debug {
    /// `finding` is in the log.
    fn recorded(&self, finding: &AuditFinding);
}

/// A cloneable handle to the log's writer thread.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Request>,
    /// Told about every appended finding ([`AuditLog::with_observer`]).
    observer: Option<Arc<dyn AuditObserver>>,
    /// The writer itself, for [`AuditLog::try_append_now`]; `None` for the
    /// null sink.
    inline: Option<Arc<dyn Inline>>,
    shared: Arc<Shared>,
    fingerprint: Arc<str>,
    /// What the writer counts about itself (metrics).
    stats: Arc<AuditStats>,
    /// Lets go of the file when the last handle goes.
    _release: Option<Arc<Release>>,
    /// Set for [`AuditLog::null`]: the next `seq`.
    #[cfg(feature = "null-sink")]
    null: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("fingerprint", &self.fingerprint)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Lets go of the log file (and its lock) when the last [`AuditLog`] handle
/// is dropped, closed or not, so the log can be opened again at once.
struct Release(Arc<dyn Inline>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl AuditLog {
    /// Loads (or creates, mode 0600) the signing key, opens `path` for append
    /// (creating it, mode 0600) and locks it, starts the writer and appends
    /// the signed `start` entry.
    ///
    /// An existing log is continued: the `start` entry links to its last line
    /// (see the crate docs for torn last lines). With `rotate_bytes > 0` the
    /// writer rotates files as described in the crate docs. With
    /// `anchor_dir` the existing log must reach what its anchor records, and
    /// the anchor is kept up to date (see the crate docs, "Anchor").
    ///
    /// # Errors
    /// The key file is too open ([`AuditError::KeyPermissions`]) or invalid,
    /// another writer has the log open ([`AuditError::InUse`]), the existing
    /// log cannot be continued or does not match its anchor
    /// ([`AuditError::Anchor`]), or the `start` entry cannot be written and
    /// synced.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let key = load_or_create_signing_key(&config.signing_key)?;
        // Locked before the tail is looked at (and maybe repaired): a
        // running writer may be in the middle of a line.
        let file = storage::open_append(&config.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                AuditError::InUse {
                    path: config.path.clone(),
                }
            } else {
                AuditError::io(&config.path, e)
            }
        })?;
        let resume = resume::prepare(&config.path, &key.verifying_key())?;
        let anchorer = match &config.anchor_dir {
            Some(dir) => {
                let log = anchor::canonical_log_path(&config.path);
                anchor::check_resume(dir, &config.path, &key.verifying_key(), resume.head)?;
                Some(Arc::new(Anchorer::new(dir, &log, key.clone())))
            }
            None => None,
        };
        let storage =
            FileStorage::with_file(&config.path, file, resume.rotated).map_err(|e| AuditError::io(&config.path, e))?;
        let reason = if resume.continues() { "restart" } else { "start" };
        let notes: Vec<&str> = resume
            .notes
            .iter()
            .map(String::as_str)
            .chain(config.start_note.as_deref())
            .collect();
        let detail = (!notes.is_empty()).then(|| notes.join("; "));
        let enc = Encoder::new(key, config.version.clone());
        let writer = Writer::new(storage, enc, resume.head, &config, reason, detail, anchorer);
        Self::spawn(writer)
    }

    /// Writes the `start` entry synchronously, then hands the writer to its
    /// thread.
    pub(crate) fn spawn<S: Storage>(mut writer: Writer<S>) -> Result<AuditLog, AuditError> {
        let path = writer.path();
        writer
            .commit(&[], false, &mut Vec::new())
            .map_err(|e| AuditError::io(&path, e))?;
        writer.flush_anchor();
        let fingerprint: Arc<str> = Arc::from(writer.fingerprint());
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        let pipe = writer.pipe();
        let stats = Arc::clone(&pipe.stats);
        let syncer_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("secureops-audit-sync".to_owned())
            .spawn(move || pipe::sync_loop(pipe, syncer_shared))
            .map_err(|e| AuditError::io(&path, e))?;
        let pipe = writer.pipe();
        if let Some(anchorer) = writer.anchorer()
            && let Err(e) = std::thread::Builder::new()
                .name("secureops-audit-anchor".to_owned())
                .spawn(move || anchorer.run())
        {
            // The syncer stops, and tells the anchorer (no thread) so.
            pipe.shutdown();
            return Err(AuditError::io(&path, e));
        }
        let writer = Arc::new(Mutex::new(writer));
        let inline: Arc<dyn Inline> = Arc::clone(&writer) as Arc<dyn Inline>;
        if let Err(e) = std::thread::Builder::new()
            .name("secureops-audit".to_owned())
            .spawn(move || writer::run(writer, rx))
        {
            pipe.shutdown();
            return Err(AuditError::io(&path, e));
        }
        Ok(AuditLog {
            tx,
            observer: None,
            _release: Some(Arc::new(Release(Arc::clone(&inline)))),
            inline: Some(inline),
            shared,
            fingerprint,
            stats,
            #[cfg(feature = "null-sink")]
            null: None,
        })
    }

    /// A log that writes nothing and answers every append at once (feature
    /// `null-sink`): the baseline of benchmarks that measure what the real
    /// log costs. Nothing is recorded, so it must never guard anything.
    #[cfg(feature = "null-sink")]
    pub fn null() -> AuditLog {
        let (tx, _) = mpsc::channel(1);
        AuditLog {
            tx,
            observer: None,
            inline: None,
            shared: Arc::default(),
            fingerprint: Arc::from("null"),
            stats: Arc::default(),
            _release: None,
            null: Some(Arc::new(std::sync::atomic::AtomicU64::new(1))),
        }
    }

    /// Appends one entry and resolves once its line is written (and synced
    /// per policy). Returns the entry's `seq`.
    ///
    /// If this future is dropped before it resolves (e.g. by a timeout), the
    /// writer skips the entry when it has not started on it yet; once its
    /// group is being written, the entry lands anyway.
    ///
    /// # Errors
    /// Any error means the entry is not in the log and the decision must
    /// become a refusal.
    pub async fn append(&self, finding: AuditFinding) -> Result<u64, AuditError> {
        let Some(observer) = &self.observer else {
            return self.request(|reply| Request::Append(finding, reply)).await;
        };
        let seen = finding.clone();
        let seq = self.request(|reply| Request::Append(finding, reply)).await?;
        observer.recorded(&seen);
        Ok(seq)
    }

    /// This handle (and clones made from it from now on) tells `observer`
    /// about every finding it appends, once it is in the log. Set it
    /// before handing out clones: earlier clones do not tell it.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn AuditObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Appends `findings` as one group on the calling thread, without a
    /// hand-off to the writer thread, if the writer is free right now;
    /// `None` when it is busy, or when the group needs a sync on the way
    /// (fsync=always, or a rotation may be due): then nothing was written
    /// and the caller uses [`AuditLog::append`]. One result per finding, as
    /// `append` gives.
    ///
    /// It blocks for one group commit (encode, one signature, one `write`
    /// into the page cache: tens of microseconds unless the file system
    /// itself stalls), so it suits a caller that answers many decisions at
    /// once and would otherwise wait for two thread wake-ups: the DNS
    /// sinkhole's read batches.
    ///
    /// Keep the [`Appended`] until the decisions' answers are sent: dropping
    /// it wakes the background sync when that is idle, a futex call that
    /// should not delay them.
    pub fn try_append_now(&self, findings: &[AuditFinding]) -> Option<Appended> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Some(Appended::failed(findings, || AuditError::Closed));
        }
        #[cfg(feature = "null-sink")]
        if let Some(next) = &self.null {
            let n = findings.len() as u64;
            let first = next.fetch_add(n, Ordering::Relaxed);
            return Some(Appended::new(
                (first..first + n).map(Ok).collect(),
                pipe::SyncWake::default(),
            ));
        }
        let appended = self.inline.as_ref()?.try_commit(findings)?;
        if let Some(observer) = &self.observer {
            for (finding, result) in findings.iter().zip(appended.iter()) {
                if result.is_ok() {
                    observer.recorded(finding);
                }
            }
        }
        Some(appended)
    }

    /// Writes the signed `stop` entry and syncs; later appends fail with
    /// [`AuditError::Closed`]. Returns the number of entries in the log
    /// series (including its start and stop entries).
    ///
    /// # Errors
    /// [`AuditError::Closed`] if already closed; a write error leaves the log
    /// open (close may be retried).
    pub async fn close(&self) -> Result<u64, AuditError> {
        self.request(Request::Close).await
    }

    /// The signing key's fingerprint (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        self.fingerprint.to_string()
    }

    /// What the writer has done so far (entries, group sizes, sync times),
    /// for metrics; shared with the writer threads, read at any time.
    pub fn stats(&self) -> Arc<AuditStats> {
        Arc::clone(&self.stats)
    }

    async fn request(&self, make: impl FnOnce(writer::Reply) -> Request) -> Result<u64, AuditError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(AuditError::Closed);
        }
        #[cfg(feature = "null-sink")]
        if let Some(next) = &self.null {
            return Ok(next.fetch_add(1, Ordering::Relaxed));
        }
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| self.gone())?;
        answer.await.map_err(|_| self.gone())?
    }

    /// Why the writer no longer answers.
    fn gone(&self) -> AuditError {
        if self.shared.closed.load(Ordering::Acquire) {
            AuditError::Closed
        } else {
            AuditError::WriterGone
        }
    }
}
