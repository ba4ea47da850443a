//! `run --learn` and the summary at the end of a run (PRODUCT.md "Policy
//! authoring"): the two ways `run` helps a user write an allowlist.

use std::path::Path;
use std::sync::Arc;

use secureops_policy::Mode;

use crate::config::Loaded;
use crate::summary::Tally;

/// What the user asked of `run` besides confinement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--learn`: let through, and record, what the allowlist lacks.
    pub learn: bool,
    /// `--quiet`: no summary at the end.
    pub quiet: bool,
}

/// Printed on stderr before the command starts under `--learn`.
const WARNING: &str = "secureops: WARNING: --learn: NOTHING IS BEING BLOCKED by the allowlist. Every destination \
     the command tries is let through and recorded (reason \"learn: ...\"); only unsafe addresses (loopback, \
     private, link-local/cloud metadata) and credential taint are still refused. Use it to write a first \
     allowlist for a trusted command, never with untrusted code or prompts.";

/// The `start` entry's note for a learning run.
const START_NOTE: &str = "run --learn: destinations outside the allowlist are let through and recorded as learned";

/// Sets up learn mode (warning, `start` note, policy switch) and the tally
/// that collects the run's decisions; call once the `start` note is
/// otherwise final and before the guard starts.
pub fn prepare(loaded: &mut Loaded, options: Options) -> Arc<Tally> {
    if options.learn {
        eprintln!("{WARNING}");
        loaded.mode = Mode::Learn;
        loaded.start_note = Some(match loaded.start_note.take() {
            Some(note) => format!("{note}; {START_NOTE}"),
            None => START_NOTE.to_owned(),
        });
    }
    let tally = Arc::new(Tally::default());
    loaded.tally = Some(Arc::clone(&tally) as Arc<dyn secureops_audit::AuditObserver>);
    tally
}

/// The summary on stderr, unless `--quiet` (nothing when nothing was
/// refused or learned).
pub fn report(tally: &Tally, log: &Path, options: Options) {
    if options.quiet {
        return;
    }
    for line in tally.render(log) {
        eprintln!("{line}");
    }
}
