//! Hand-off between the writer thread and the syncer thread.
//!
//! With fsync=batch the writer does not wait for the data sync: it writes a
//! group, answers its requests (the lines are in the file, so a crash or
//! kill of the guard cannot lose them), queues the group here and goes on
//! with the next one, while the syncer thread syncs everything queued so far
//! (one `fdatasync` covers several groups). Only a power loss or a kernel
//! crash can lose lines, and only those written since the last finished
//! sync. With fsync=always each line is synced by the writer, and the syncer
//! only answers the requests.
//!
//! A failed background sync *poisons* the pipe for good: groups not yet
//! handed over fail (the writer truncates them off: their requests were not
//! answered), and nothing more is written by this process, because a later
//! sync that succeeds would not prove that the earlier lines reached the
//! disk (Linux reports a writeback error once). A restart continues the
//! chain.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::anchor::{Anchorer, Point};
use crate::error::AuditError;
use crate::stats::AuditStats;
use crate::storage::SyncFn;
use crate::writer::{Reply, Shared, Slot};

/// A group that is written but maybe not yet durable.
pub(crate) struct Written {
    /// How to make it durable; `None` when already synced (fsync=always).
    pub sync: Option<SyncFn>,
    /// Each finding's request and outcome.
    pub replies: Vec<(Reply, Slot)>,
    /// The close request and the entry count, if the group ends with `stop`.
    pub close: Option<(Reply, u64)>,
    /// The group's last (signed) entry, for the anchor once it is durable.
    pub anchor: Option<Point>,
}

impl Written {
    /// Answers every request still waiting: with its outcome if `result` is
    /// `Ok`.
    fn answer(self, result: &Result<(), (io::ErrorKind, String)>, path: &std::path::Path) {
        for (reply, slot) in self.replies {
            answer(reply, slot, result, path);
        }
        if let Some((reply, count)) = self.close {
            let _ = reply.send(result.as_ref().map(|_| count).map_err(|e| io_error(e, path)));
        }
    }
}

/// Answers one request: its slot's outcome, or the group's error.
pub(crate) fn answer(reply: Reply, slot: Slot, result: &Result<(), (io::ErrorKind, String)>, path: &std::path::Path) {
    let _ = reply.send(match (slot, result) {
        (Slot::Refused(e), _) => Err(e),
        (Slot::Seq(seq), Ok(())) => Ok(seq),
        (Slot::Seq(_), Err(e)) => Err(io_error(e, path)),
    });
}

fn io_error((kind, msg): &(io::ErrorKind, String), path: &std::path::Path) -> AuditError {
    AuditError::io(path, io::Error::new(*kind, msg.clone()))
}

struct State {
    queue: Vec<Written>,
    poisoned: bool,
    /// The syncer took a batch off the queue and has not answered it yet.
    busy: bool,
    /// The `stop` entry is durable.
    closed: bool,
    exit: bool,
    /// In a failure episode (logged once, not per entry).
    failing: bool,
    /// The syncer is sitting out [`SYNC_INTERVAL`]: a group nobody waits
    /// for need not wake it (a wake-up per group cost more than the group).
    spacing: bool,
}

/// The wake-up of the syncer that a queued group may owe it, given when
/// this is dropped. An idle syncer must be told there is something to sync,
/// and that futex call (which may also put the syncer on this CPU ahead of
/// the caller) should not sit between a decision's line and its answer: the
/// writer keeps this until it has answered the group, the DNS sinkhole until
/// it has sent the answers (see `AuditLog::try_append_now`). Dropping it is
/// enough; it cannot be lost, not even by a panic.
#[must_use = "dropping it at once wakes the syncer before the answers"]
#[derive(Default)]
pub(crate) struct SyncWake(Option<Arc<Pipe>>);

impl Drop for SyncWake {
    fn drop(&mut self) {
        if let Some(pipe) = self.0.take() {
            // The group was queued under the lock: a syncer that checks the
            // queue after this sees it, one that waits is woken here.
            pipe.cond.notify_all();
        }
    }
}

impl std::fmt::Debug for SyncWake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SyncWake").field(&self.0.is_some()).finish()
    }
}

/// See the module docs.
pub(crate) struct Pipe {
    state: Mutex<State>,
    cond: Condvar,
    path: PathBuf,
    /// Told each durable point (see [`crate::anchor`]).
    anchor: Option<Arc<Anchorer>>,
    /// Group and sync figures for metrics.
    pub(crate) stats: Arc<AuditStats>,
}

impl Pipe {
    pub(crate) fn new(path: PathBuf, anchor: Option<Arc<Anchorer>>) -> Self {
        Pipe {
            state: Mutex::new(State {
                queue: Vec::new(),
                poisoned: false,
                busy: false,
                closed: false,
                exit: false,
                failing: false,
                spacing: false,
            }),
            cond: Condvar::new(),
            path,
            anchor,
            stats: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the log down with it; the state
        // is only plain data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the syncer has answered everything queued.
    fn idle(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        while !st.queue.is_empty() || st.busy {
            st = self.wait(st);
        }
        st
    }

    /// Queues a written group; gives it back if the pipe is poisoned (a sync
    /// failed while it was being written, so it fails too). The syncer is
    /// woken when the returned [`SyncWake`] is dropped: answer the group's
    /// decisions first.
    pub(crate) fn push(self: &Arc<Self>, written: Written) -> Result<SyncWake, Box<Written>> {
        let mut st = self.lock();
        if st.poisoned {
            return Err(Box::new(written));
        }
        let waited_for = !written.replies.is_empty() || written.close.is_some();
        st.queue.push(written);
        Ok(SyncWake((waited_for || !st.spacing).then(|| Arc::clone(self))))
    }

    /// Marks a background sync as failed, as the syncer does.
    #[cfg(test)]
    pub(crate) fn poison(&self) {
        self.lock().poisoned = true;
    }

    /// Whether a background sync has failed (see the module docs).
    pub(crate) fn poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// Whether the `stop` entry is durable, without waiting.
    pub(crate) fn closed_now(&self) -> bool {
        self.lock().closed
    }

    /// Waits for the syncer to be idle; `false` if the pipe is poisoned.
    pub(crate) fn quiesce(&self) -> bool {
        !self.idle().poisoned
    }

    /// Waits until everything queued is answered; `true` if the log is closed.
    pub(crate) fn closed(&self) -> bool {
        self.idle().closed
    }

    /// Lets the syncer finish the queue and exit.
    pub(crate) fn shutdown(&self) {
        self.lock().exit = true;
        self.cond.notify_all();
    }

    /// Logs the first failure of an episode.
    pub(crate) fn note_failure(&self, what: &str, e: &io::Error) {
        let mut st = self.lock();
        self.failure(&mut st, what, e);
    }

    fn failure(&self, st: &mut State, what: &str, e: &io::Error) {
        if !st.failing {
            st.failing = true;
            tracing::error!(path = %self.path.display(), error = %e,
                "audit log {what} failed; decisions are refused until it recovers");
        }
    }

    /// Ends a failure episode.
    pub(crate) fn note_success(&self) {
        let mut st = self.lock();
        Self::success(&mut st, &self.path);
    }

    fn success(st: &mut State, path: &std::path::Path) {
        if st.failing {
            st.failing = false;
            tracing::warn!(path = %path.display(), "audit log writes work again");
        }
    }
}

/// Shortest time between the starts of two background syncs.
///
/// With fsync=batch nobody waits for a sync (but a `close`), so syncing
/// back to back would only burn CPU and disk on many small syncs: on this
/// kind of VM an `fdatasync` costs about as much CPU as a hundred decisions.
/// Waiting this long bounds what a power loss can take (lines written since
/// the last finished sync) to about this interval plus one sync.
const SYNC_INTERVAL: Duration = Duration::from_millis(5);

/// The syncer thread: sync what is queued, then answer whatever waits.
///
/// A group that still has requests waiting (fsync=always, whose lines the
/// writer already synced, or a `close`) is handled at once; groups that were
/// answered when written are synced at most every [`SYNC_INTERVAL`].
pub(crate) fn sync_loop(pipe: Arc<Pipe>, shared: Arc<Shared>) {
    let mut batch = Vec::new();
    let mut last_started: Option<Instant> = None;
    loop {
        let poisoned = {
            let mut st = pipe.lock();
            while st.queue.is_empty() && !st.exit {
                st = pipe.wait(st);
            }
            if st.queue.is_empty() {
                if let Some(anchor) = &pipe.anchor {
                    anchor.shutdown();
                }
                return;
            }
            let not_before = last_started.map(|t| t + SYNC_INTERVAL);
            while let Some(left) = not_before.and_then(|t| t.checked_duration_since(Instant::now())) {
                let someone_waits = st.queue.iter().any(|w| !w.replies.is_empty() || w.close.is_some());
                if someone_waits || st.poisoned || st.exit {
                    break;
                }
                st.spacing = true;
                st = pipe
                    .cond
                    .wait_timeout(st, left)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
                st.spacing = false;
            }
            std::mem::swap(&mut batch, &mut st.queue);
            st.busy = true;
            st.poisoned
        };
        let started = Instant::now();
        let result = if poisoned {
            Err(io::Error::other("an earlier sync of the audit log failed"))
        } else {
            // All groups of a batch are in the same file (rotation waits for
            // an idle pipe), and one data sync covers them all.
            match batch.iter().rev().find_map(|w| w.sync.clone()) {
                Some(sync) => pipe.stats.timed_sync(|| sync()),
                None => Ok(()),
            }
        };
        if batch.iter().any(|w| w.sync.is_some()) {
            last_started = Some(started);
        }
        let closing = batch.iter().any(|w| w.close.is_some());
        {
            let mut st = pipe.lock();
            st.busy = false;
            match &result {
                Ok(()) => {
                    if closing {
                        st.closed = true;
                        shared.closed.store(true, Ordering::Release);
                    }
                    Pipe::success(&mut st, &pipe.path);
                }
                Err(e) => {
                    st.poisoned = true;
                    pipe.failure(&mut st, "sync", e);
                }
            }
            pipe.cond.notify_all();
        }
        let result = result.map_err(|e| (e.kind(), e.to_string()));
        // Durable now: the anchor may name the newest group, after the
        // answers (a post may wake the anchor thread).
        let point = result
            .is_ok()
            .then(|| batch.iter().rev().find_map(|w| w.anchor))
            .flatten();
        for written in batch.drain(..) {
            written.answer(&result, &pipe.path);
        }
        if let (Some(anchor), Some(point)) = (&pipe.anchor, point) {
            anchor.post(point);
        }
    }
}
