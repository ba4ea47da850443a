//! The writer: the file and the chain live in one [`Writer`] behind a
//! mutex, and whoever holds it commits requests in groups: the writer
//! thread ([`run`]), or a caller with many decisions at hand while the
//! thread is idle ([`Inline`], fsync=batch only).
//!
//! A group of the thread is whatever is queued when it wakes up (up to
//! [`MAX_GROUP`]). A group gets one timestamp and one `write` (fsync=batch),
//! with sign=batch one signature on its last line. With fsync=batch its
//! requests are answered once it is written and the data sync happens on
//! the syncer thread (see [`crate::pipe`]); with fsync=always each line is
//! synced here before the next is written. A group either lands completely
//! or not at all: on a failed write or sync the file is truncated back and
//! every request of the group gets an error (its decision becomes a
//! refusal).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, TryLockError};

use tokio::sync::{mpsc, oneshot};

use crate::anchor::{Anchorer, Point};
use crate::config::{AuditConfig, FsyncPolicy, SignPolicy};
use crate::encode::{Body, Encoder};
use crate::error::AuditError;
use crate::finding::AuditFinding;
use crate::log::Appended;
use crate::pipe::{Pipe, SyncWake, Written};
use crate::resume::ChainHead;
use crate::storage::Storage;

/// Why nothing more is written after a failed background sync.
const SYNC_FAILED: &str = "a background sync of the audit log failed; decisions are refused until the guard restarts";

/// A group would rotate the file where rotating is not allowed (a caller's
/// thread): nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("the audit log is due to rotate; left to the writer thread")]
pub(crate) struct RotationDue;

/// Most requests committed as one group.
pub(crate) const MAX_GROUP: usize = 1024;

/// Reply channel of one request.
pub(crate) type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// What the handle asks of the thread.
pub(crate) enum Request {
    /// Append a finding; reply with its `seq`.
    Append(AuditFinding, Reply),
    /// Write the `stop` entry; reply with the entry count.
    Close(Reply),
}

/// State shared between the handles and the threads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set once the `stop` entry is durable.
    pub closed: AtomicBool,
}

/// The `start` entry still to be written at the head of the next group.
#[derive(Clone)]
pub(crate) struct PendingStart {
    reason: &'static str,
    detail: Option<String>,
}

/// Writer state before a group: where [`Writer::undo`] returns to.
pub(crate) struct Mark {
    /// File length.
    len: u64,
    /// Chain head.
    head: ChainHead,
    /// Entries in the current file.
    file_entries: u64,
    /// A `start` entry still owed at the head of the next group.
    start: Option<PendingStart>,
}

/// The outcome of one finding within a group.
pub(crate) enum Slot {
    /// Written with this `seq`.
    Seq(u64),
    /// Refused before writing (too large); the rest of the group is fine.
    Refused(AuditError),
}

/// Group commit over some [`Storage`].
pub(crate) struct Writer<S: Storage> {
    storage: S,
    enc: Encoder,
    head: ChainHead,
    fsync: FsyncPolicy,
    sign: SignPolicy,
    rotate_bytes: u64,
    /// Entries in the current file (rotation never leaves a file with only
    /// its `start`).
    file_entries: u64,
    start: Option<PendingStart>,
    buf: Vec<u8>,
    line_ends: Vec<usize>,
    pipe: Arc<Pipe>,
    anchor: Option<Arc<Anchorer>>,
}

impl<S: Storage> Writer<S> {
    pub(crate) fn new(
        storage: S,
        enc: Encoder,
        head: ChainHead,
        config: &AuditConfig,
        start_reason: &'static str,
        start_detail: Option<String>,
        anchor: Option<Arc<Anchorer>>,
    ) -> Self {
        let start = Some(PendingStart {
            reason: start_reason,
            detail: start_detail,
        });
        let pipe = Arc::new(Pipe::new(storage.path().to_owned(), anchor.clone()));
        Writer {
            storage,
            enc,
            head,
            fsync: config.fsync,
            sign: config.sign,
            rotate_bytes: config.rotate_bytes,
            file_entries: 0,
            start,
            buf: Vec::with_capacity(64 * 1024),
            line_ends: Vec::with_capacity(MAX_GROUP + 2),
            pipe,
            anchor,
        }
    }

    pub(crate) fn fingerprint(&self) -> &str {
        self.enc.fingerprint()
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.storage.path().to_owned()
    }

    pub(crate) fn pipe(&self) -> Arc<Pipe> {
        Arc::clone(&self.pipe)
    }

    pub(crate) fn anchorer(&self) -> Option<Arc<Anchorer>> {
        self.anchor.clone()
    }

    /// The last line written: the last entry of the last group, always
    /// signed (see [`Writer::build`]).
    fn point(&self) -> Option<Point> {
        let seq = self.head.next_seq.checked_sub(1)?;
        Some(Point {
            seq,
            head: self.head.prev,
        })
    }

    /// Writes the anchor for everything written so far, now; only once it
    /// is durable (after [`Writer::commit`], or a group of fsync=always).
    pub(crate) fn flush_anchor(&self) {
        if let (Some(anchor), Some(point)) = (&self.anchor, self.point()) {
            anchor.flush(point);
        }
    }

    /// The `stop` is durable: the final anchor, then let go of the file, so
    /// that whoever waits for the close can open the log again at once.
    fn finish(&mut self) {
        self.flush_anchor();
        self.storage.release();
    }

    /// Lets go of the file (every handle is gone).
    pub(crate) fn release(&mut self) {
        self.storage.release();
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            len: self.storage.committed_len(),
            head: self.head,
            file_entries: self.file_entries,
            start: self.start.clone(),
        }
    }

    /// Commits `findings` (and a `stop` entry when `close`) as one group and
    /// syncs it before returning, preceded by a `start` entry if one is
    /// pending. Fills `slots` with one outcome per finding and returns the
    /// entry count when `close`. Only while the syncer is idle (opening,
    /// tests).
    pub(crate) fn commit(
        &mut self,
        findings: &[AuditFinding],
        close: bool,
        slots: &mut Vec<Slot>,
    ) -> io::Result<Option<u64>> {
        let count = self.commit_inner(findings, close, slots, true, true)?;
        self.pipe.note_success();
        Ok(count)
    }

    /// Like [`Writer::commit`] but leaves the data sync (fsync=batch) to the
    /// syncer: the returned group goes to [`Pipe::push`].
    /// `may_rotate`: whether a rotation due may happen here; if not, it
    /// fails with [`RotationDue`] before writing anything.
    pub(crate) fn commit_pipelined(
        &mut self,
        findings: &[AuditFinding],
        close: bool,
        slots: &mut Vec<Slot>,
        may_rotate: bool,
    ) -> io::Result<(Option<crate::storage::SyncFn>, Option<u64>)> {
        if self.pipe.poisoned() {
            // A background sync failed. Linux reports a writeback error
            // once, so a later sync that succeeds proves nothing about the
            // lines before it: they may be gone from the disk although
            // their decisions took effect. Nothing more is written by this
            // process (fail-closed); a restart continues the chain.
            return Err(io::Error::other(SYNC_FAILED));
        }
        let before = self.mark();
        let count = self.commit_inner(findings, close, slots, false, may_rotate)?;
        let sync = match self.fsync {
            FsyncPolicy::Batch => match self.storage.sync_handle() {
                Ok(sync) => Some(sync),
                Err(e) => {
                    // Written but cannot be synced: its callers get the
                    // error, so its lines must go.
                    self.undo(before);
                    self.pipe.note_failure("sync", &e);
                    return Err(e);
                }
            },
            FsyncPolicy::Always => None,
        };
        Ok((sync, count))
    }

    /// Commits one group: `findings` (whose callers are still waiting) and
    /// a `stop` entry when `close` is set; answers the requests or hands
    /// them to the syncer (see [`crate::pipe`]). Leaves the buffers empty.
    /// Returns `true` once a `close` is durable (the log is finished).
    pub(crate) fn commit_group(
        &mut self,
        findings: &mut Vec<AuditFinding>,
        replies: &mut Vec<Reply>,
        slots: &mut Vec<Slot>,
        close: Option<Reply>,
    ) -> bool {
        // A caller that gave up (timeout) has already refused; do not log
        // a decision that did not happen.
        if replies.iter().any(oneshot::Sender::is_closed) {
            let mut keep = replies.iter().map(|r| !r.is_closed());
            findings.retain(|_| keep.next().unwrap_or(false));
            replies.retain(|r| !r.is_closed());
        }
        let closing = close.is_some();
        if findings.is_empty() && !closing {
            return false;
        }
        let close = match close {
            Some(close) if self.fsync == FsyncPolicy::Batch => {
                return self.close_synced(findings, replies, slots, close);
            }
            other => other,
        };
        let path = self.path();
        let before = self.mark();
        let result = self.commit_pipelined(findings, closing, slots, true);
        findings.clear();
        match result {
            Ok((sync, count)) => {
                // fsync=batch: a finding is answered once its line is
                // written; the syncer makes it durable shortly after (see
                // the crate docs). A `stop` still waits for its sync.
                let early = sync.is_some();
                // Only fsync=always gets here with a close (see above).
                let close = close.zip(count);
                let written = Written {
                    sync,
                    replies: if early {
                        Vec::new()
                    } else {
                        replies.drain(..).zip(slots.drain(..)).collect()
                    },
                    close: None,
                    anchor: self.point(),
                };
                match self.pipe.push(written) {
                    Ok(wake) => {
                        for (reply, slot) in replies.drain(..).zip(slots.drain(..)) {
                            crate::pipe::answer(reply, slot, &Ok(()), &path);
                        }
                        // The syncer only after the answers (see SyncWake).
                        drop(wake);
                        if let Some(close) = close {
                            // The `stop` is synced already; the group's
                            // decisions are answered meanwhile.
                            self.finish();
                            self.push_close(close, &path);
                        }
                    }
                    Err(written) => {
                        // A sync failed while this group was being written:
                        // it fails too, and its lines must not stay behind.
                        self.undo(before);
                        let e = io::Error::other("an earlier sync of the audit log failed");
                        fail(
                            written
                                .replies
                                .into_iter()
                                .map(|(r, _)| r)
                                .chain(replies.drain(..))
                                .chain(close.map(|(r, _)| r)),
                            &path,
                            &e,
                        );
                        slots.clear();
                    }
                }
            }
            Err(e) => fail(replies.drain(..).chain(close), &path, &e),
        }
        closing && self.pipe.closed()
    }

    /// fsync=batch: writes the last group with its `stop` entry and syncs
    /// it here, once everything before it is durable, so that a failed sync
    /// leaves no `stop` behind (the close may be retried). Returns `true`
    /// when the log is closed.
    fn close_synced(
        &mut self,
        findings: &mut Vec<AuditFinding>,
        replies: &mut Vec<Reply>,
        slots: &mut Vec<Slot>,
        close: Reply,
    ) -> bool {
        let path = self.path();
        let result = if self.pipe.quiesce() {
            self.commit(findings, true, slots)
        } else {
            Err(io::Error::other(SYNC_FAILED))
        };
        findings.clear();
        let count = match result {
            // With `close` the count is always there: the entries so far.
            Ok(count) => count.unwrap_or(self.head.next_seq),
            Err(e) => {
                fail(replies.drain(..).chain(Some(close)), &path, &e);
                slots.clear();
                return false;
            }
        };
        for (reply, slot) in replies.drain(..).zip(slots.drain(..)) {
            crate::pipe::answer(reply, slot, &Ok(()), &path);
        }
        self.finish();
        self.push_close((close, count), &path);
        self.pipe.closed()
    }

    /// Hands the answer to a close whose `stop` is durable to the syncer,
    /// which marks the log closed and answers it.
    fn push_close(&self, close: (Reply, u64), path: &std::path::Path) {
        let written = Written {
            sync: None,
            replies: Vec::new(),
            close: Some(close),
            anchor: None,
        };
        match self.pipe.push(written) {
            // The close waits for the syncer: wake it now.
            Ok(wake) => drop(wake),
            Err(written) => {
                let e = io::Error::other(SYNC_FAILED);
                fail(written.close.map(|(r, _)| r).into_iter(), path, &e);
            }
        }
    }

    /// Takes back a group written after `before` that could not be handed
    /// to the syncer (its requests are failed, so its lines must go).
    pub(crate) fn undo(&mut self, before: Mark) {
        // On failure the storage retries the truncation before its next
        // append (which fails while it cannot), so the chain goes back
        // either way.
        if let Err(e) = self.storage.rollback_to(before.len) {
            tracing::error!(path = %self.storage.path().display(), error = %e,
                "cannot truncate a failed group off the audit log; will retry");
        }
        self.head = before.head;
        self.file_entries = before.file_entries;
        self.start = before.start;
    }

    fn commit_inner(
        &mut self,
        findings: &[AuditFinding],
        close: bool,
        slots: &mut Vec<Slot>,
        sync_now: bool,
        rotate_here: bool,
    ) -> io::Result<Option<u64>> {
        self.enc.stamp();
        let mut may_rotate = self.rotate_bytes > 0;
        loop {
            let before = self.head;
            self.build(findings, close, slots);
            let lines = self.line_ends.len() as u64;
            if may_rotate
                && self.file_entries > 1
                && self.storage.committed_len() + self.buf.len() as u64 > self.rotate_bytes
            {
                self.head = before;
                if !rotate_here {
                    slots.clear();
                    return Err(io::Error::other(RotationDue));
                }
                may_rotate = false;
                self.rotate()?;
                continue; // rebuild, now headed by a `start`
            }
            if let Err(e) = self.write(sync_now) {
                self.head = before;
                self.pipe.note_failure("write", &e);
                return Err(e);
            }
            self.storage.commit();
            self.pipe.stats.group(lines);
            self.start = None;
            self.file_entries += lines;
            return Ok(close.then_some(self.head.next_seq));
        }
    }

    /// Encodes the group into `buf`; records line ends.
    fn build(&mut self, findings: &[AuditFinding], close: bool, slots: &mut Vec<Slot>) {
        self.buf.clear();
        self.line_ends.clear();
        slots.clear();
        if let Some(start) = &self.start {
            let body = Body::Start {
                reason: start.reason,
                detail: start.detail.as_deref(),
            };
            // A start line is tiny; it cannot be too large.
            if self.enc.push(&mut self.head, &mut self.buf, body, true).is_ok() {
                self.line_ends.push(self.buf.len());
            }
        }
        let each = self.sign == SignPolicy::Each;
        let mut last_unsigned: Option<(usize, ChainHead, usize)> = None;
        for (i, finding) in findings.iter().enumerate() {
            let last = i + 1 == findings.len() && !close;
            let before = (self.buf.len(), self.head);
            let sign = each || last;
            match self
                .enc
                .push(&mut self.head, &mut self.buf, Body::Finding(finding), sign)
            {
                Ok(seq) => {
                    self.line_ends.push(self.buf.len());
                    slots.push(Slot::Seq(seq));
                    last_unsigned = (!sign).then_some((before.0, before.1, i));
                }
                Err(e) => slots.push(Slot::Refused(e)),
            }
        }
        if let Some((at, head, i)) = last_unsigned.filter(|_| !close) {
            // The last finding was refused, so the group's last line is
            // unsigned: encode that one again, signed.
            self.buf.truncate(at);
            self.line_ends.pop();
            self.head = head;
            if let Some(finding) = findings.get(i) {
                match self
                    .enc
                    .push(&mut self.head, &mut self.buf, Body::Finding(finding), true)
                {
                    Ok(_) => self.line_ends.push(self.buf.len()),
                    Err(e) => slots[i] = Slot::Refused(e),
                }
            }
        }
        if close
            && self
                .enc
                .push(&mut self.head, &mut self.buf, Body::Stop { reason: "close" }, true)
                .is_ok()
        {
            self.line_ends.push(self.buf.len());
        }
    }

    /// Writes `buf`, syncing per policy (fsync=batch: only if `sync_now`);
    /// rolls back on failure.
    fn write(&mut self, sync_now: bool) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = match self.fsync {
            FsyncPolicy::Batch => self.storage.append(&self.buf).and_then(|()| {
                if sync_now {
                    self.pipe.stats.timed_sync(|| self.storage.sync())
                } else {
                    Ok(())
                }
            }),
            FsyncPolicy::Always => {
                let mut from = 0;
                let mut result = Ok(());
                for &end in &self.line_ends {
                    result = self
                        .storage
                        .append(&self.buf[from..end])
                        .and_then(|()| self.pipe.stats.timed_sync(|| self.storage.sync()));
                    if result.is_err() {
                        break;
                    }
                    from = end;
                }
                result
            }
        };
        if result.is_err()
            && let Err(e) = self.storage.rollback()
        {
            tracing::error!(path = %self.storage.path().display(), error = %e,
                "cannot truncate the audit log back after a failed write; will retry");
        }
        result
    }

    /// Closes the current file with a signed `stop` and continues in a new
    /// one (see [`Storage::rotate`]). Waits for the syncer first: the old
    /// file must be complete and durable before it is renamed.
    fn rotate(&mut self) -> io::Result<()> {
        if !self.pipe.quiesce() {
            return Err(io::Error::other("an earlier sync of the audit log failed"));
        }
        let before = self.head;
        self.buf.clear();
        self.line_ends.clear();
        if self
            .enc
            .push(&mut self.head, &mut self.buf, Body::Stop { reason: "rotate" }, true)
            .is_ok()
        {
            self.line_ends.push(self.buf.len());
        }
        if let Err(e) = self.write(true) {
            self.head = before;
            self.pipe.note_failure("write", &e);
            return Err(e);
        }
        self.storage.commit();
        self.pipe.stats.group(self.line_ends.len() as u64);
        // The `stop` is on disk: the next line must be a `start`, in
        // whichever file we end up in.
        self.start = Some(PendingStart {
            reason: "rotate",
            detail: None,
        });
        self.file_entries = 0;
        if let Err(e) = self.storage.rotate() {
            // Keep going (in the old file, or a new one on the next append);
            // do not retry every group.
            tracing::error!(path = %self.storage.path().display(), error = %e,
                "audit log rotation failed; rotation disabled until restart");
            self.rotate_bytes = 0;
        }
        Ok(())
    }
}

/// Group commit on the caller's thread (see [`crate::AuditLog::try_append_now`]).
pub(crate) trait Inline: Send + Sync {
    /// Commits `findings` as one group if the writer is free at this moment
    /// and fsync=batch; `None` otherwise (nothing written).
    fn try_commit(&self, findings: &[AuditFinding]) -> Option<Appended>;
    /// Lets go of the log file (see [`Storage::release`]).
    fn release(&self);
}

impl<S: Storage> Inline for Mutex<Writer<S>> {
    fn release(&self) {
        // Even after a panic: the file must be let go.
        self.lock().unwrap_or_else(std::sync::PoisonError::into_inner).release();
    }

    fn try_commit(&self, findings: &[AuditFinding]) -> Option<Appended> {
        // Never wait: the writer thread (or another caller) holding the
        // lock is committing a group, and may be waiting for a sync.
        let mut writer = match self.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::WouldBlock) => return None,
            // A panic while committing may have left the chain head ahead
            // of the file: nothing more can be written (fail-closed).
            Err(TryLockError::Poisoned(_)) => return Some(Appended::failed(findings, || AuditError::WriterGone)),
        };
        // fsync=always syncs every line, and a rotation syncs and renames:
        // both are left to the writer thread, off the caller's thread.
        if writer.fsync != FsyncPolicy::Batch {
            return None;
        }
        let path = writer.path();
        let mut slots = Vec::with_capacity(findings.len());
        // Checked under the lock: a close holds it until the log is closed.
        if writer.pipe.closed_now() {
            return Some(Appended::failed(findings, || AuditError::Closed));
        }
        let result = writer.commit_now(findings, &mut slots);
        // The caller answers before the wake-up, but not under our lock.
        drop(writer);
        Some(match result {
            Ok(None) => return None,
            Ok(Some(wake)) => {
                let results = slots
                    .into_iter()
                    .map(|slot| match slot {
                        Slot::Seq(seq) => Ok(seq),
                        Slot::Refused(e) => Err(e),
                    })
                    .collect();
                Appended::new(results, wake)
            }
            Err(e) => Appended::failed(findings, || {
                AuditError::io(&path, io::Error::new(e.kind(), e.to_string()))
            }),
        })
    }
}

impl<S: Storage> Writer<S> {
    /// Writes `findings` as one group and hands it to the syncer
    /// (fsync=batch only): answered as soon as it is written, like a group
    /// of the writer thread. `None` (nothing written) when the group would
    /// rotate the file: a rotation syncs, so it is the writer thread's.
    fn commit_now(&mut self, findings: &[AuditFinding], slots: &mut Vec<Slot>) -> io::Result<Option<SyncWake>> {
        if findings.is_empty() {
            return Ok(Some(SyncWake::default()));
        }
        let before = self.mark();
        let (sync, _) = match self.commit_pipelined(findings, false, slots, false) {
            Ok(done) => done,
            Err(e) if e.get_ref().is_some_and(|e| e.is::<RotationDue>()) => return Ok(None),
            Err(e) => return Err(e),
        };
        let written = Written {
            sync,
            replies: Vec::new(),
            close: None,
            anchor: self.point(),
        };
        match self.pipe.push(written) {
            Ok(wake) => Ok(Some(wake)),
            Err(_) => {
                // A sync failed meanwhile: the group fails with it.
                self.undo(before);
                Err(io::Error::other(SYNC_FAILED))
            }
        }
    }
}

/// The writer thread's loop: receive, group, write, hand to the syncer. Ends
/// after a successful close, when every handle is gone, or when a panic
/// while committing (on any thread) poisoned the writer: its chain head may
/// be ahead of the file, so nothing more is written (fail-closed).
pub(crate) fn run<S: Storage>(writer: Arc<Mutex<Writer<S>>>, mut rx: mpsc::Receiver<Request>) {
    let Ok((pipe, path)) = writer.lock().map(|w| (w.pipe(), w.path())) else {
        return;
    };
    let mut findings: Vec<AuditFinding> = Vec::with_capacity(MAX_GROUP);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_GROUP);
    let mut slots: Vec<Slot> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        let mut close = None;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append(finding, reply) => {
                    findings.push(finding);
                    replies.push(reply);
                }
                // Anything queued after the close stays queued and is
                // dropped with the channel (those callers see `Closed`).
                Request::Close(reply) => close = Some(reply),
            }
            if close.is_none() && findings.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        let Ok(mut w) = writer.lock() else {
            tracing::error!(path = %path.display(), "audit writer panicked; decisions are refused until restart");
            for reply in replies.drain(..).chain(close) {
                let _ = reply.send(Err(AuditError::WriterGone));
            }
            pipe.shutdown();
            return;
        };
        if w.commit_group(&mut findings, &mut replies, &mut slots, close) {
            pipe.shutdown();
            return;
        }
    }
    pipe.shutdown();
    tracing::warn!(path = %path.display(), "audit log dropped without close; no stop entry written");
}

fn fail(replies: impl Iterator<Item = Reply>, path: &std::path::Path, e: &io::Error) {
    for reply in replies {
        let _ = reply.send(Err(AuditError::io(path, io::Error::new(e.kind(), e.to_string()))));
    }
}
