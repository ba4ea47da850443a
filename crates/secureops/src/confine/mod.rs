//! Confinement for `secureops run`: CMD runs in its own network namespace
//! (user + network namespace when not root) whose only way out is the
//! guard. No veth, no host routes, no named namespace: the namespace and
//! its nftables table disappear with the last process in it.
//!
//! `unshare(1)` creates the namespace and execs our hidden `__ns-child`
//! subcommand in it (a fresh single-threaded process, as user namespaces
//! require). The child binds the listeners inside the namespace and passes
//! them back over a Unix socket; the supervisor serves them from the host
//! namespace, where it makes the upstream connections.

mod child;
mod fdpass;
pub mod landlock;
pub mod seccomp;
pub mod nft;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use child::main as child_main;

/// The listeners bound inside the namespace.
#[derive(Debug)]
pub struct Listeners {
    /// Explicit proxy (`HTTPS_PROXY`).
    pub explicit: TcpListener,
    /// Redirected TCP.
    pub transparent: TcpListener,
    /// DNS sinkhole, UDP.
    pub dns_udp: UdpSocket,
    /// DNS sinkhole, TCP.
    pub dns_tcp: TcpListener,
    /// sock_diag socket of the namespace (exact process lookups).
    pub diag: std::os::fd::OwnedFd,
}

/// A command waiting in its namespace for the guard to start.
#[derive(Debug)]
pub struct Confined {
    /// The command's process (after `go` it *is* CMD).
    pub child: Child,
    control: UnixStream,
}

/// Points the proxy variables (both cases, as tools disagree) at `url` and
/// removes the exceptions, for tools that honour them.
pub fn proxy_env(command: &mut Command, url: &str) {
    for var in secureops_proxy::PROXY_VARIABLES {
        command.env(var, url);
    }
    for var in secureops_proxy::NO_PROXY_VARIABLES {
        command.env_remove(var);
    }
}

/// How CMD will be confined, for messages and `tier`.
pub fn describe() -> &'static str {
    "user + network namespace, no capabilities, no-new-privs"
}

/// Starts CMD's namespace and receives its listeners. Spawned from the
/// main thread, before any runtime: the child's parent-death signal is
/// tied to the thread that forked it.
pub fn spawn(cmd: &[String]) -> anyhow::Result<(Confined, Listeners)> {
    let dir = tempfile::Builder::new()
        .prefix("secureops-run-")
        .tempdir()
        .context("cannot create a control folder")?;
    let path = dir.path().join("control.sock");
    let listener = UnixListener::bind(&path).context("cannot create the control socket")?;
    listener.set_nonblocking(true)?;
    let exe = std::env::current_exe().context("cannot find our own executable")?;
    // Always a user namespace, even as root: CMD's capabilities then count
    // only inside it (it cannot `nsenter` the host network), and it gets
    // none anyway (see child.rs). Through sudo, the whole namespace belongs
    // to the invoking user, so CMD acts as them outside it.
    let mut command = match sudo_user() {
        Some((uid, gid)) => {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("cannot hand the control folder over")?;
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).context("cannot hand the control socket over")?;
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--init-groups")
                .arg("--")
                .arg("unshare");
            c
        }
        None => Command::new("unshare"),
    };
    command.args(["--user", "--map-root-user", "--net"]);
    command.arg("--").arg(exe).arg("__ns-child").arg("--control").arg(&path);
    command.arg("--").args(cmd);
    let mut child = command.spawn().context("cannot run unshare (util-linux)")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let control = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("control socket"),
        }
        if let Some(status) = child.try_wait()? {
            bail!("cannot create a network namespace for the command ({status})");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the namespace helper did not start in time");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Connected: the socket file and its folder are no longer needed, and
    // removing them now leaves nothing behind even if we are killed later.
    drop(listener);
    let _ = dir.close();
    control.set_nonblocking(false)?;
    control.set_read_timeout(Some(Duration::from_secs(15)))?;
    let fds = match fdpass::recv(&control) {
        Ok(fds) => fds,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("cannot set up the namespace ({status}): {e}");
        }
    };
    let mut fds = fds.into_iter();
    let mut next = || fds.next().context("missing descriptor");
    let listeners = Listeners {
        explicit: TcpListener::from(next()?),
        transparent: TcpListener::from(next()?),
        dns_udp: UdpSocket::from(next()?),
        dns_tcp: TcpListener::from(next()?),
        diag: next()?,
    };
    Ok((Confined { child, control }, listeners))
}

impl Confined {
    /// Lets CMD start: the guard is serving.
    pub fn go(&mut self) -> std::io::Result<()> {
        self.control.write_all(b"g")
    }
}

/// The invoking user when started through sudo (CMD then runs as them).
fn sudo_user() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    (uid != 0).then_some((uid, gid))
}

/// Can this machine confine a command? Tries it with `unshare … true`.
pub fn probe() -> Result<(), String> {
    let mut c = Command::new("unshare");
    c.args(["--user", "--map-root-user", "--net"]);
    let out = c
        .args(["--", "true"])
        .output()
        .map_err(|e| format!("unshare not available: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        Ok(())
    } else {
        Err("nft (nftables) is not installed".into())
    }
}
