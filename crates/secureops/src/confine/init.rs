//! The run's PID 1: ours, not CMD's. It starts CMD, forwards the signals
//! the supervisor relays (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2),
//! reaps every orphan of the run, and when CMD exits kills whatever CMD
//! left behind (a daemonised grandchild does not outlive the run) and exits
//! with CMD's status (128+N when signal N ended it), which `unshare` and
//! then `secureops run` pass on.
//!
//! Signals are blocked and taken with `sigwait` (no handler, nothing
//! async-signal-unsafe). Terminal signals (SIGTSTP, SIGTTIN, SIGTTOU) are
//! left alone: a namespace's init ignores them, while CMD, in the
//! terminal's foreground process group, stops as usual (Ctrl-Z).

use std::process::Command;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals passed on to CMD.
const FORWARD: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Starts `command` and serves as init until it exits; returns its status.
/// `interactive`: CMD shares the terminal's foreground process group, so
/// the terminal delivers SIGINT and SIGQUIT (Ctrl-C, Ctrl-\\) to it
/// directly; they are not passed on a second time.
pub fn run(mut command: Command, interactive: bool) -> anyhow::Result<u8> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARD {
        if !(interactive && matches!(s, Signal::SIGINT | Signal::SIGQUIT)) {
            set.add(*s);
        }
    }
    // Blocked only after the spawn: a blocked mask is inherited by CMD
    // (std does not clear it). A SIGCHLD before the block is caught by the
    // reap below; a relayed signal before it is lost (a namespace's init
    // ignores what it has no handler for), a window of microseconds.
    let child = command.spawn().context("cannot start the command")?;
    set.thread_block().context("cannot block signals")?;
    // From now on the init only waits and signals inside the run: it keeps
    // no capability (a process that could reach it gains nothing).
    drop_capabilities().context("cannot drop the init's capabilities")?;
    let cmd = Pid::from_raw(i32::try_from(child.id()).context("pid")?);
    let mut sig = Signal::SIGCHLD;
    loop {
        if sig != Signal::SIGCHLD {
            let _ = kill(cmd, sig);
        } else if let Some(code) = reap(cmd) {
            // Everything else in the namespace; then collect them.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            while !matches!(waitpid(None, None), Err(Errno::ECHILD)) {}
            return Ok(code);
        }
        sig = set.wait().context("sigwait")?;
    }
}

/// Reaps every exited child; `Some(status)` once CMD is among them.
fn reap(cmd: Pid) -> Option<u8> {
    let mut done = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == cmd => done = Some(u8::try_from(code).unwrap_or(1)),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == cmd => {
                done = Some(u8::try_from(128 + sig as i32).unwrap_or(1));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return done,
            Ok(_) => {}
        }
    }
}

fn drop_capabilities() -> rustix::io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets, set_capabilities};
    rustix::thread::clear_ambient_capability_set()?;
    set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )
}
