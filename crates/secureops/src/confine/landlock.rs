//! The Landlock layer of `run`: scopes CMD's signals and Unix sockets to
//! its own processes. Applied to the calling thread, best effort
//! (`CompatLevel::BestEffort`: what this kernel lacks is left out, and
//! [`Status`] says what was enforced); everything the thread starts
//! afterwards inherits the restriction, which can never be lifted.
//! "Inside" below means a process started after `apply`, by the thread that
//! called it or by its descendants (the Landlock domain); everything else is
//! "outside", including the process that called `apply` before it did.
//!
//! # What it blocks
//!
//! - Signals to processes outside (`kill`, `tgkill`, `sigqueue`,
//!   `pidfd_send_signal`, `F_SETOWN` I/O signals): `EPERM`
//!   (`Scope::Signal`, ABI 6, Linux 6.12). CMD cannot stop, kill or wake
//!   the user's other processes, nor the guard.
//! - `connect`/`sendmsg` to abstract Unix sockets bound outside: `EPERM`
//!   (`Scope::AbstractUnixSocket`, ABI 6). In the kernel-enforced tier the
//!   network namespace already hides the host's abstract sockets (their
//!   names are per network namespace); this also covers `--weak` runs and
//!   sockets bound in CMD's namespace by the guard.
//! - `connect`/`sendmsg` to pathname Unix sockets, unless the socket lies
//!   beneath one of the paths given to [`apply`] or was bound inside:
//!   `EACCES` (`AccessFs::ResolveUnix`, ABI 9, Linux 7.1). That keeps CMD
//!   away from the Docker socket, the D-Bus buses, systemd, `/dev/log`...
//!   of the host even where they are visible in its mount namespace.
//! - Whenever a domain is made (ABI 6 or later here): `ptrace` and the
//!   accesses that use its permission check (`/proc/PID/mem`, `environ`,
//!   `process_vm_readv`, `pidfd_getfd`...) on processes outside.
//!
//! # What it does not block
//!
//! Files (no file-system right but `ResolveUnix` is handled, so reads and
//! writes are left to mounts and permissions); TCP and UDP (the network
//! namespace and nftables); signals and sockets between processes inside;
//! Unix sockets already connected, or passed in, before `apply`. On a
//! kernel before 7.1 (ABI < 9; this machine's 6.18 offers ABI 7) nothing
//! restricts pathname Unix sockets: hide them with mounts. Before 6.12
//! (ABI < 6) this layer enforces nothing at all (`Status` is all false).

use std::path::PathBuf;

use anyhow::Context;
use landlock::{
    AccessFs, CompatLevel, Compatible, LandlockStatus, PathBeneath, PathFd, RestrictSelf, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

/// ABI of `Scope::Signal` and `Scope::AbstractUnixSocket`.
const ABI_SCOPES: u32 = 6;
/// ABI of `AccessFs::ResolveUnix`.
const ABI_RESOLVE_UNIX: u32 = 9;

/// The Landlock ABI this kernel offers (0: none).
pub fn abi() -> u32 {
    // A `RestrictSelf` builder asks the kernel its ABI when it is made
    // (`landlock_create_ruleset` with `LANDLOCK_CREATE_RULESET_VERSION`);
    // with no flag requested and no_new_privs off, `apply` makes no other
    // system call: it only reports, and restricts nothing.
    match RestrictSelf::default().no_new_privs(false).apply() {
        Ok(status) => abi_of(status.landlock),
        Err(_) => 0,
    }
}

/// The kernel's ABI number; the crate's own when the kernel's is unknown
/// to it (newer), which is then the greatest it knows.
fn abi_of(status: LandlockStatus) -> u32 {
    match status {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => kernel_abi
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(effective_abi as u32),
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => 0,
    }
}

/// What `apply` enforced, for `tier` and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The kernel's Landlock ABI (0: none).
    pub abi: u32,
    /// Signals to processes outside are refused.
    pub signal_scope: bool,
    /// Abstract Unix sockets bound outside are out of reach.
    pub abstract_unix_scope: bool,
    /// Pathname Unix sockets are reachable only beneath the given paths.
    pub resolve_unix: bool,
}

/// Restricts the calling thread (and what it starts): see module doc.
/// `unix_allowed_beneath` are the folders (or socket files) whose pathname
/// Unix sockets stay reachable on ABI 9 and later: the private tmpfs
/// folders, the command's working folder, explicitly allowed sockets. A
/// path that cannot be opened (absent) is skipped, which only narrows what
/// is reachable. Also sets no_new_privs on the thread, as Landlock needs.
pub fn apply(unix_allowed_beneath: &[PathBuf]) -> anyhow::Result<Status> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .context("cannot scope the Landlock ruleset")?
        // Dropped (best effort) before ABI 9, and with it every rule below.
        .handle_access(AccessFs::ResolveUnix)
        .context("cannot handle ResolveUnix")?
        .create()
        .context("cannot create the Landlock ruleset")?;
    for path in unix_allowed_beneath {
        match PathFd::new(path) {
            Ok(fd) => {
                ruleset = ruleset
                    .add_rule(PathBeneath::new(fd, AccessFs::ResolveUnix))
                    .with_context(|| format!("cannot allow Unix sockets beneath {}", path.display()))?;
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "skipping a Unix-socket path"),
        }
    }
    let status = ruleset.restrict_self().context("cannot enforce the Landlock ruleset")?;
    // The crate's ABI (not a newer kernel's unknown one) says what it used.
    let used = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi as u32,
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => 0,
    };
    let enforced = status.ruleset != RulesetStatus::NotEnforced;
    Ok(Status {
        abi: abi_of(status.landlock),
        signal_scope: enforced && used >= ABI_SCOPES,
        abstract_unix_scope: enforced && used >= ABI_SCOPES,
        resolve_unix: enforced && used >= ABI_RESOLVE_UNIX,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use std::io::ErrorKind;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::process::Command;

    /// Runs `f` on a new thread restricted by `apply(allowed)` (the test
    /// process itself stays outside the domain).
    fn restricted<T: Send + 'static>(allowed: Vec<PathBuf>, f: impl FnOnce() -> T + Send + 'static) -> (Status, T) {
        std::thread::spawn(move || {
            let status = apply(&allowed).unwrap();
            (status, f())
        })
        .join()
        .unwrap()
    }

    fn sh(script: &str) -> bool {
        Command::new("sh").args(["-c", script]).status().unwrap().success()
    }

    fn python(script: &str) -> String {
        let out = Command::new("python3").arg("-c").arg(script).output().expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn abstract_addr(name: &str) -> SocketAddr {
        SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    }

    /// A Python snippet connecting to the Unix socket `addr` (a repr'd
    /// Python string), printing `ok` or the errno.
    fn py_connect(addr: &str) -> String {
        format!(
            "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({addr})\n    print('ok')\n\
             except OSError as e:\n    print(e.errno)"
        )
    }

    #[test]
    fn abi_matches_apply() {
        let probed = abi();
        let (status, ()) = restricted(Vec::new(), || ());
        assert_eq!(status.abi, probed);
        assert_eq!(status.signal_scope, probed >= ABI_SCOPES);
        assert_eq!(status.abstract_unix_scope, probed >= ABI_SCOPES);
        assert_eq!(status.resolve_unix, probed >= ABI_RESOLVE_UNIX);
    }

    #[test]
    fn signals_stay_inside() {
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = sleeper.id();
        let _ = abi(); // the probe restricts nothing: the control still works
        assert!(sh(&format!("kill -0 {pid}")), "control: outside the domain");
        let (status, (outside, inside)) = restricted(Vec::new(), move || {
            (
                sh(&format!("kill -0 {pid} 2>/dev/null")),
                sh("sleep 30 & p=$!; kill -0 $p; r=$?; kill $p; exit $r"),
            )
        });
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(inside, "signals inside the domain must work");
        if status.signal_scope {
            assert!(!outside, "kill -0 of a process outside the domain must fail");
        } else {
            eprintln!("SKIP: no Landlock signal scoping on this kernel (ABI {})", status.abi);
        }
    }

    #[test]
    fn abstract_sockets_stay_inside() {
        let tag = format!("secureops-landlock-test-{}", std::process::id());
        let outside_name = format!("{tag}-outside");
        let inside_name = format!("{tag}-inside");
        let _outside = UnixListener::bind_addr(&abstract_addr(&outside_name)).unwrap();
        let (status, (direct, child_out, child_in)) = restricted(Vec::new(), move || {
            let direct = UnixStream::connect_addr(&abstract_addr(&outside_name))
                .err()
                .and_then(|e| e.raw_os_error());
            let _inside = UnixListener::bind_addr(&abstract_addr(&inside_name)).unwrap();
            let child_out = python(&py_connect(&format!("'\\0{outside_name}'")));
            let child_in = python(&py_connect(&format!("'\\0{inside_name}'")));
            (direct, child_out, child_in)
        });
        assert_eq!(child_in, "ok", "a socket bound inside the domain is reachable");
        if status.abstract_unix_scope {
            assert_eq!(direct, Some(1), "EPERM for the restricted thread");
            assert_eq!(child_out, "1", "EPERM for its child");
        } else {
            eprintln!(
                "SKIP: no Landlock abstract-socket scoping on this kernel (ABI {})",
                status.abi
            );
            assert_eq!((direct, child_out.as_str()), (None, "ok"));
        }
    }

    #[test]
    fn pathname_sockets_beneath_allowed_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (allowed, other) = (dir.path().join("allowed"), dir.path().join("other"));
        std::fs::create_dir(&allowed).unwrap();
        std::fs::create_dir(&other).unwrap();
        let (a, o) = (allowed.join("s.sock"), other.join("s.sock"));
        let _a = UnixListener::bind(&a).unwrap();
        let _o = UnixListener::bind(&o).unwrap();
        let paths = vec![allowed.clone(), dir.path().join("missing")];
        let (status, (to_allowed, to_other)) = restricted(paths, move || {
            (
                UnixStream::connect(&a).map(drop).map_err(|e| e.kind()),
                UnixStream::connect(&o).map(drop).map_err(|e| e.kind()),
            )
        });
        assert_eq!(to_allowed, Ok(()));
        if status.resolve_unix {
            assert_eq!(to_other, Err(ErrorKind::PermissionDenied));
        } else {
            // Documented gap: nothing restricts pathname sockets before ABI 9.
            assert_eq!(to_other, Ok(()));
        }
    }
}
