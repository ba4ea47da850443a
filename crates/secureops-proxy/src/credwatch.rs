//! Credential-file opens, from fanotify (Linux; needs root). Every open on
//! the watched file systems is an event carrying the opener's pid; opens of
//! files matching `[context] credential_paths` taint the opener.
//!
//! Events are queued by the kernel when `open(2)` runs, so before each
//! decision the PDP drains the queue ([`CredWatch::sync`]): a process that
//! opened `.env` and then connects is always seen as tainted, however busy
//! the watcher thread is.
//!
//! A notification can outlive its process (`cat .env | curl …`: cat is gone
//! before its event is read, and with it its process group). So each
//! credential file, once seen, also gets an inode mark in a second group
//! with *permission* events: later opens of it wait, for the microseconds
//! it takes to read the opener's facts, and are then allowed. Only
//! credential files carry those marks, so no other open ever waits.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::fanotify::{EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response};
use secureops_policy::{CredentialGlobs, Taint, TaintStore};

use crate::procinfo;

/// Why credential opens cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch credential files with fanotify: {0} (needs root; taint is not enforced)")]
pub struct WatchError(String);

/// The watcher and the taints it recorded.
#[derive(Debug)]
pub struct CredWatch {
    /// Until when (ms since boot) every process counts as tainted because
    /// the kernel's event queue overflowed and opens may have been lost.
    overflow_until: std::sync::atomic::AtomicU64,
    fan: Mutex<Fanotify>,
    /// Permission events on credential files already seen (`None` when the
    /// kernel refuses a content-class group).
    perm: Option<Fanotify>,
    /// A duplicate of the fanotify descriptor, polled without the lock so
    /// that decisions never wait behind an idle poll.
    wake: std::os::fd::OwnedFd,
    globs: CredentialGlobs,
    taints: Mutex<TaintStore>,
}

impl CredWatch {
    /// Starts watching the file systems holding `roots` (and `/`).
    pub fn start(globs: CredentialGlobs, store: TaintStore, roots: &[PathBuf]) -> Result<Arc<Self>, WatchError> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(|e| WatchError(e.desc().to_owned()))?;
        let mut marked = 0;
        for root in std::iter::once(Path::new("/")).chain(roots.iter().map(PathBuf::as_path)) {
            let flags = MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM;
            // With no path, the mark is on `dir` itself: its whole file system.
            let Ok(dir) = std::fs::File::open(root) else { continue };
            if fan.mark(flags, MaskFlags::FAN_OPEN, &dir, None::<&Path>).is_ok() {
                marked += 1;
            }
        }
        if marked == 0 {
            return Err(WatchError("no file system could be marked".into()));
        }
        let wake = fan
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| WatchError(e.to_string()))?;
        let perm = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .ok();
        let watch = Arc::new(Self {
            overflow_until: Default::default(),
            fan: Mutex::new(fan),
            perm,
            wake,
            globs,
            taints: Mutex::new(store),
        });
        let worker = Arc::clone(&watch);
        std::thread::Builder::new()
            .name("secureops-credwatch".into())
            .spawn(move || worker.run())
            .map_err(|e| WatchError(e.to_string()))?;
        if watch.perm.is_some() {
            // Credential files that exist now get their permission mark at
            // once, so even their first opener cannot slip by unseen.
            watch.mark_existing(roots, 8, 50_000);
            let worker = Arc::clone(&watch);
            std::thread::Builder::new()
                .name("secureops-credperm".into())
                .spawn(move || worker.run_perm())
                .map_err(|e| WatchError(e.to_string()))?;
        }
        Ok(watch)
    }

    fn run(&self) {
        loop {
            let mut fds = [rustix::event::PollFd::new(&self.wake, rustix::event::PollFlags::IN)];
            let timeout = rustix::event::Timespec { tv_sec: 1, tv_nsec: 0 };
            if rustix::event::poll(&mut fds, Some(&timeout)).unwrap_or(0) > 0 {
                self.sync();
            }
        }
    }

    /// Walks `roots` breadth-first (shallow files first; bounded in depth
    /// and entries; symlinks and build/VCS folders skipped) and marks the
    /// credential files found.
    fn mark_existing(&self, roots: &[PathBuf], max_depth: usize, mut budget: usize) {
        const SKIP: [&str; 5] = ["target", "node_modules", ".git", "proc", "sys"];
        let mut queue: std::collections::VecDeque<(PathBuf, usize)> = roots.iter().map(|r| (r.clone(), 0)).collect();
        let mut seen = std::collections::HashSet::new();
        while let Some((dir, depth)) = queue.pop_front() {
            if !seen.insert(dir.clone()) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if budget == 0 {
                    return;
                }
                budget -= 1;
                let Ok(kind) = entry.file_type() else { continue };
                let path = entry.path();
                if kind.is_dir() {
                    let skip = entry.file_name().to_str().is_some_and(|n| SKIP.contains(&n));
                    if depth < max_depth && !skip {
                        queue.push_back((path, depth + 1));
                    }
                } else if kind.is_file()
                    && self.globs.matches(&path).is_some()
                    && let (Some(perm), Ok(root)) = (&self.perm, std::fs::File::open("/"))
                {
                    let _ = perm.mark(MarkFlags::FAN_MARK_ADD, MaskFlags::FAN_OPEN_PERM, &root, Some(&path));
                }
            }
        }
    }

    /// Answers permission events: record the opener, then let it open.
    fn run_perm(&self) {
        let Some(perm) = &self.perm else { return };
        loop {
            // Blocking read: this group only sees opens of credential files.
            let Ok(events) = perm.read_events() else {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            };
            for event in events {
                let Some(fd) = event.fd() else { continue };
                if let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
                {
                    self.record(event.pid(), &path);
                }
                // Always answer: an unanswered permission event blocks the opener.
                let _ = perm.write_response(FanotifyResponse::new(fd, Response::FAN_ALLOW));
            }
        }
    }

    /// Records a credential open by `pid`, and marks the file for
    /// permission events so that its next opener cannot vanish unseen.
    fn record(&self, pid: i32, path: &Path) {
        if pid <= 0 || pid == std::process::id() as i32 || self.globs.matches(path).is_none() {
            return;
        }
        if let (Some(perm), Ok(root)) = (&self.perm, std::fs::File::open("/")) {
            // The path is absolute, so the directory descriptor is unused.
            let _ = perm.mark(MarkFlags::FAN_MARK_ADD, MaskFlags::FAN_OPEN_PERM, &root, Some(path));
        }
        let pid = pid as u32;
        let Some(facts) = procinfo::facts(pid) else {
            tracing::warn!(pid, path = %path.display(), "credential file opened by a process that is already gone");
            return;
        };
        let taint = Taint {
            path: path.to_string_lossy().into_owned(),
            pid,
            start_ms: facts.start_ms,
            pgid: facts.pgid,
            at_ms: procinfo::now_ms(),
        };
        tracing::info!(pid, path = %taint.path, "credential file opened; process tainted");
        if let Ok(mut store) = self.taints.lock() {
            store.record(taint);
        }
    }

    /// Whether this process may watch credential opens (fanotify needs
    /// `CAP_SYS_ADMIN`); `secureops tier` reports it.
    pub fn probe() -> Result<(), WatchError> {
        Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC,
            EventFFlags::O_RDONLY,
        )
        .map(drop)
        .map_err(|e| WatchError(e.desc().to_owned()))
    }

    /// Reads the events queued so far and records the credential opens.
    ///
    /// Stops at the first short read: the queue was empty at that moment,
    /// so every open that happened before this call has been seen (the
    /// queue is FIFO), while a machine that keeps opening files cannot keep
    /// a decision waiting.
    pub fn sync(&self) {
        let started = std::time::Instant::now();
        let mut seen = 0usize;
        let Ok(fan) = self.fan.lock() else { return };
        // nix reads into a 4096-byte buffer; metadata records are 24 bytes.
        const FULL: usize = 4096 / 24;
        while let Ok(events) = fan.read_events() {
            let caught_up = events.len() < FULL;
            seen += events.len();
            for event in events {
                if event.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
                    // Opens were lost: fail closed, treating everyone as
                    // tainted for one window.
                    let window = self.taints.lock().map(|t| t.window_ms()).unwrap_or(30_000);
                    let until = procinfo::now_ms() + window;
                    self.overflow_until
                        .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(
                        "fanotify queue overflowed: credential opens may be lost; every process counts as tainted for {window} ms"
                    );
                    continue;
                }
                let Some(fd) = event.fd() else { continue };
                let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
                else {
                    continue;
                };
                self.record(event.pid(), &path);
            }
            if caught_up {
                break;
            }
        }
        tracing::debug!(
            events = seen,
            elapsed_us = started.elapsed().as_micros() as u64,
            "credential watch synced"
        );
    }

    /// The taint that applies to `pid` now (after draining queued events).
    pub fn taint_of(&self, pid: u32) -> Option<Taint> {
        self.sync();
        let now = procinfo::now_ms();
        if now < self.overflow_until.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(Taint {
                path: "(unknown: credential-open events were lost)".into(),
                pid,
                start_ms: 0,
                pgid: 0,
                at_ms: now,
            });
        }
        let facts = procinfo::facts(pid)?;
        let mut store = self.taints.lock().ok()?;
        store.expire(now);
        store.lookup(&facts, now).cloned()
    }
}
