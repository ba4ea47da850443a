//! Confinement for `secureops run`: CMD runs in its own user, network,
//! mount and PID namespaces, whose only way out is the guard. No veth, no
//! host routes, no named namespace: the namespaces and their nftables table
//! disappear with the run's init.
//!
//! `unshare(1)` creates the namespaces and forks our hidden `__ns-child`
//! subcommand as their PID 1 (a fresh single-threaded process, as user
//! namespaces require). The child binds the listeners inside the network
//! namespace and passes them back over a Unix socket; the supervisor serves
//! them from the host namespace, where it makes the upstream connections.
//! The go-ahead carries the mount plan ([`plan::Plan`]); the child applies
//! it, then Landlock and seccomp, and starts CMD as its only child.
//!
//! One file per layer: `nft.rs` (network), `mounts.rs` + `plan.rs` (files
//! and sockets), `init.rs` (PID namespace init), `seccomp.rs`,
//! `landlock.rs`, `fds.rs` (descriptor hygiene).

mod child;
mod fdpass;
mod fds;
mod init;
pub mod landlock;
mod mounts;
pub mod nft;
pub mod plan;
pub mod seccomp;

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
    /// `unshare`, whose exit status is CMD's.
    pub child: Child,
    /// The run's init (PID 1 inside), as this process sees it: signals
    /// for CMD go here.
    pub init: rustix::process::Pid,
    control: UnixStream,
}

/// Another account to run CMD as (`run --user`, or the invoking user
/// under sudo): the whole namespace belongs to it.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// Account name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home folder.
    pub home: std::path::PathBuf,
    /// Its login shell.
    pub shell: std::path::PathBuf,
}

/// What `--user` keeps of the caller's environment (besides `LC_*`).
const KEEP_ENV: &[&str] = &["TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "NO_COLOR"];

impl RunAs {
    /// Looks an account up through NSS (`getent passwd`).
    pub fn lookup(name: &str) -> anyhow::Result<RunAs> {
        let out = Command::new("getent")
            .args(["passwd", name])
            .output()
            .context("cannot run getent")?;
        let line = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = line.trim().split(':').collect();
        if !out.status.success() || fields.len() < 7 {
            bail!("no account named {name:?}");
        }
        Ok(RunAs {
            name: fields[0].to_owned(),
            uid: fields[2].parse().context("uid")?,
            gid: fields[3].parse().context("gid")?,
            home: fields[5].into(),
            shell: fields[6].into(),
        })
    }

    /// The invoking user when started through sudo (CMD then runs as them).
    pub fn sudo_user() -> Option<RunAs> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
        let gid: u32 = std::env::var("SUDO_GID").ok()?.parse().ok()?;
        if uid == 0 {
            return None;
        }
        let name = std::env::var("SUDO_USER").unwrap_or_else(|_| uid.to_string());
        let found = RunAs::lookup(&name).ok();
        Some(RunAs {
            name,
            uid,
            gid,
            home: found
                .as_ref()
                .map_or_else(crate::config::agent_home, |r| r.home.clone()),
            shell: found.map_or_else(|| "/bin/sh".into(), |r| r.shell),
        })
    }
}

/// Points the proxy variables (both cases, as tools disagree) at `url`,
/// for tools that honour them. The exceptions are the caller's: none
/// (`--weak`: loopback is the host's), or the namespace's own loopback
/// ([`LOOPBACK`]: the agent's local servers, which never leave the run).
pub fn proxy_env(command: &mut Command, url: &str, no_proxy: Option<&str>) {
    for var in secureops_proxy::PROXY_VARIABLES {
        command.env(var, url);
    }
    for var in secureops_proxy::NO_PROXY_VARIABLES {
        match no_proxy {
            Some(list) => command.env(var, list),
            None => command.env_remove(var),
        };
    }
}

/// Inside a run, loopback is the namespace's own.
pub const LOOPBACK: &str = "localhost,127.0.0.1,::1";

/// How CMD will be confined, for messages and `tier`.
pub fn describe() -> &'static str {
    "user, network, mount and PID namespace, seccomp filter, no capabilities, no-new-privs"
}

/// The namespaces of a run: user (CMD's capabilities count only inside
/// it), network, mount and PID, with a fresh `/proc`.
const UNSHARE: &[&str] = &[
    "--user",
    // CMD keeps its own uid inside (tools that refuse root, ssh and git
    // ownership checks see what they expect); the init keeps the
    // namespace's capabilities across exec, and CMD gets none.
    "--map-current-user",
    "--keep-caps",
    "--net",
    "--mount",
    // SysV IPC and POSIX message queues, the host name, the cgroup view:
    // the host's would be shared otherwise.
    "--ipc",
    "--uts",
    "--cgroup",
    "--pid",
    "--fork",
    "--kill-child=KILL",
    "--mount-proc",
];

/// Starts CMD's namespace and receives its listeners. Spawned from the
/// main thread, before any runtime: the child's parent-death signal is
/// tied to the thread that forked it.
pub fn spawn(cmd: &[String], run_as: Option<&RunAs>) -> anyhow::Result<(Confined, Listeners)> {
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
    // none anyway (see child.rs). As another account (sudo, --user), the
    // whole namespace belongs to that account. `unshare` dies with us
    // (parent-death signal), and its init with it (--kill-child).
    let mut command = Command::new("setpriv");
    if let Some(user) = run_as {
        std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
            .context("cannot hand the control folder over")?;
        std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))
            .context("cannot hand the control socket over")?;
        command
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            // Root's environment (its secrets, its XDG folders) is not the
            // account's: only what describes the terminal and locale stays.
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| {
                k.to_str()
                    .is_some_and(|k| KEEP_ENV.contains(&k) || k.starts_with("LC_"))
            }))
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    command.args(["--pdeathsig=KILL", "--", "unshare"]).args(UNSHARE);
    command.arg("--").arg(exe).arg("__ns-child").arg("--control").arg(&path);
    command.arg("--").args(cmd);
    let mut child = command.spawn().context("cannot run setpriv/unshare (util-linux)")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let control = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("control socket"),
        }
        if let Some(status) = child.try_wait()? {
            bail!("cannot create the namespaces for the command ({status})");
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
    // The init's pid as we see it (the kernel translates it to our PID
    // namespace).
    let init = rustix::net::sockopt::socket_peercred(&control)
        .context("cannot identify the namespace helper")?
        .pid;
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
    Ok((Confined { child, init, control }, listeners))
}

impl Confined {
    /// Lets CMD start (the guard is serving), with the mount plan.
    pub fn go(&mut self, plan: &plan::Plan) -> anyhow::Result<()> {
        plan.send(&mut self.control)
    }
}

/// Can this machine confine a command? Tries it with `unshare … true`.
pub fn probe() -> Result<(), String> {
    let mut c = Command::new("unshare");
    c.args(UNSHARE);
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
