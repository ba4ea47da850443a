//! Credential-file opens, from fanotify (Linux; needs root). Every open on
//! the watched file systems is an event carrying the opener's pid; opens of
//! files matching `[context] credential_paths` taint the opener.
//!
//! Events are queued by the kernel when `open(2)` runs, so before each
//! decision the PDP drains the queue ([`CredWatch::sync`]): a process that
//! opened `.env` and then connects is always seen as tainted, however busy
//! the watcher thread is.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
use secureops_policy::{CredentialGlobs, Taint, TaintStore};

use crate::procinfo;

/// Why credential opens cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch credential files with fanotify: {0} (needs root; taint is not enforced)")]
pub struct WatchError(String);

/// The watcher and the taints it recorded.
#[derive(Debug)]
pub struct CredWatch {
    fan: Mutex<Fanotify>,
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
        let watch = Arc::new(Self { fan: Mutex::new(fan), globs, taints: Mutex::new(store) });
        let worker = Arc::clone(&watch);
        std::thread::Builder::new()
            .name("secureops-credwatch".into())
            .spawn(move || worker.run())
            .map_err(|e| WatchError(e.to_string()))?;
        Ok(watch)
    }

    fn run(&self) {
        loop {
            let ready = {
                let Ok(fan) = self.fan.lock() else { return };
                let fd = fan.as_fd();
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                // Short poll with the lock released in between, so `sync`
                // callers are never blocked behind it for long.
                let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: 50_000_000 };
                rustix::event::poll(&mut fds, Some(&timeout)).unwrap_or(0)
            };
            if ready > 0 {
                self.sync();
            }
        }
    }

    /// Reads the events queued so far and records the credential opens.
    ///
    /// Stops at the first short read: the queue was empty at that moment,
    /// so every open that happened before this call has been seen (the
    /// queue is FIFO), while a machine that keeps opening files cannot keep
    /// a decision waiting.
    pub fn sync(&self) {
        let Ok(fan) = self.fan.lock() else { return };
        let own = std::process::id() as i32;
        // nix reads into a 4096-byte buffer; metadata records are 24 bytes.
        const FULL: usize = 4096 / 24;
        while let Ok(events) = fan.read_events() {
            let caught_up = events.len() < FULL;
            for event in events {
                let pid = event.pid();
                if pid <= 0 || pid == own {
                    continue;
                }
                let Some(fd) = event.fd() else { continue };
                let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))) else {
                    continue;
                };
                if self.globs.matches(&path).is_none() {
                    continue;
                }
                let pid = pid as u32;
                let Some(facts) = procinfo::facts(pid) else { continue };
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
            if caught_up {
                break;
            }
        }
    }

    /// The taint that applies to `pid` now (after draining queued events).
    pub fn taint_of(&self, pid: u32) -> Option<Taint> {
        self.sync();
        let facts = procinfo::facts(pid)?;
        let now = procinfo::now_ms();
        let mut store = self.taints.lock().ok()?;
        store.expire(now);
        store.lookup(&facts, now).cloned()
    }
}
