//! Failures logged once per episode, not once per request: the first
//! failure says what broke, the first success after it says it works
//! again; what happens in between is in the audit log.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether something is failing now (see the module docs).
#[derive(Debug, Default)]
pub struct Episode(AtomicBool);

impl Episode {
    /// A failure: `log` runs if this starts an episode.
    pub fn failed(&self, log: impl FnOnce()) {
        if !self.0.swap(true, Ordering::Relaxed) {
            log();
        }
    }

    /// A success: `log` runs if this ends an episode.
    pub fn worked(&self, log: impl FnOnce()) {
        // Read first: the common case (nothing failing) stays a plain load.
        if self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Relaxed) {
            log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_episode() {
        let e = Episode::default();
        let mut logged = Vec::new();
        e.worked(|| logged.push("ok"));
        e.failed(|| logged.push("fail"));
        e.failed(|| logged.push("fail"));
        e.worked(|| logged.push("ok"));
        e.worked(|| logged.push("ok"));
        e.failed(|| logged.push("fail"));
        assert_eq!(logged, ["fail", "ok", "fail"]);
    }
}
