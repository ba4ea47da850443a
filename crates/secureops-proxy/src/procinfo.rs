//! Facts about a process, read from `/proc`: start time, process group,
//! ancestors (for the taint scope), and the executable's SHA-256 (for
//! process rules), cached by device, inode and mtime so that a swapped
//! binary is noticed.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use secureops_policy::ProcessFacts;
use sha2::{Digest, Sha256};

/// Milliseconds since boot (the clock of process start times).
pub fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64) * 1000 + (t.tv_nsec as u64) / 1_000_000
}

/// `(ppid, pgid, start_ms)` from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. Then: state ppid pgrp session tty tpgid flags minflt
    // cminflt majflt cmajflt utime stime cutime cstime priority nice
    // num_threads itrealvalue starttime.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let pgid = fields.get(2)?.parse().ok()?;
    let ticks: u64 = fields.get(19)?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some((ppid, pgid, ticks * 1000 / hz))
}

/// The parent pid of `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    stat(pid).map(|(ppid, _, _)| ppid)
}

/// The facts the taint store needs, or `None` when the process is gone.
pub fn facts(pid: u32) -> Option<ProcessFacts> {
    let (mut ppid, pgid, start_ms) = stat(pid)?;
    let mut ancestors = Vec::new();
    // Bounded walk: pid namespaces and races cannot make it loop forever.
    while ppid > 1 && ancestors.len() < 64 {
        let Some((next, _, start)) = stat(ppid) else { break };
        ancestors.push((ppid, start));
        ppid = next;
    }
    Some(ProcessFacts {
        pid,
        start_ms,
        pgid,
        ancestors,
    })
}

/// SHA-256 of executables, keyed by (device, inode, mtime, size).
#[derive(Debug, Default)]
pub struct ExeHashes {
    cache: Mutex<HashMap<(u64, u64, i64, u64), String>>,
}

impl ExeHashes {
    /// Lower-hex SHA-256 of the executable of `pid` (read through
    /// `/proc/PID/exe`, so a deleted or replaced path still hashes what
    /// actually runs).
    pub fn of_pid(&self, pid: u32) -> Option<String> {
        self.of_path(Path::new(&format!("/proc/{pid}/exe")))
    }

    /// The hash when already known; otherwise starts hashing in the
    /// background (a large binary takes long enough to hash that a
    /// connection must not wait for it) and returns `None`.
    pub fn of_pid_cached(self: &std::sync::Arc<Self>, pid: u32) -> Option<String> {
        let path = std::path::PathBuf::from(format!("/proc/{pid}/exe"));
        let meta = std::fs::metadata(&path).ok()?;
        let key = (meta.dev(), meta.ino(), meta.mtime(), meta.size());
        {
            let mut cache = self.cache.lock().ok()?;
            if let Some(h) = cache.get(&key) {
                return (!h.is_empty()).then(|| h.clone());
            }
            // An empty value marks "being hashed".
            cache.insert(key, String::new());
        }
        let me = std::sync::Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("secureops-exehash".into())
            .spawn(move || {
                if me.of_path(&path).is_none()
                    && let Ok(mut cache) = me.cache.lock()
                {
                    cache.remove(&key);
                }
            });
        if spawned.is_err()
            && let Ok(mut cache) = self.cache.lock()
        {
            cache.remove(&key);
        }
        None
    }

    fn of_path(&self, path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let key = (meta.dev(), meta.ino(), meta.mtime(), meta.size());
        if let Ok(cache) = self.cache.lock()
            && let Some(h) = cache.get(&key)
            && !h.is_empty()
        {
            return Some(h.clone());
        }
        let mut file = std::fs::File::open(path).ok()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).ok()?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 4096 {
                cache.clear();
            }
            cache.insert(key, hex.clone());
        }
        Some(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_facts() {
        let f = facts(std::process::id()).unwrap();
        assert_eq!(f.pid, std::process::id());
        assert!(f.start_ms <= now_ms());
        assert!(!f.ancestors.is_empty());
    }

    #[test]
    fn exe_hash_is_cached_and_stable() {
        let h = ExeHashes::default();
        let a = h.of_pid(std::process::id()).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(h.of_pid(std::process::id()).unwrap(), a);
    }
}
