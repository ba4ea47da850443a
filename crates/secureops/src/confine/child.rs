//! `secureops __ns-child`: the run's PID 1, inside the fresh user, network,
//! mount and PID namespaces that `unshare(1)` made for it. It brings up
//! loopback, installs the nftables redirect, binds the guard's listeners
//! *inside* the namespace, hands them to the supervisor, waits for the
//! go-ahead (the mount plan), hides and locks what the plan names, applies
//! Landlock and the seccomp filter to itself (and so to all it starts),
//! starts CMD without capabilities and serves as the run's init (see
//! `init.rs`), exiting with CMD's status.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, bail};

use super::fdpass;
use super::nft::{PORTS, ruleset};
use super::plan::Plan;

/// Exit status when the namespace could not be set up (before CMD ran).
pub const SETUP_FAILED: u8 = 125;

/// Entry point of the hidden subcommand.
pub fn main(control: &Path, cmd: &[String]) -> ExitCode {
    match setup_and_exec(control, cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("secureops: cannot confine the command: {e:#}");
            ExitCode::from(SETUP_FAILED)
        }
    }
}

fn setup_and_exec(control: &Path, cmd: &[String]) -> anyhow::Result<u8> {
    // What the user's shell passed us; everything we open later must not
    // reach CMD (checked before it starts).
    let entry_fds = super::fds::open_now();
    let mut sock = UnixStream::connect(control).context("cannot reach the supervisor")?;
    run(&["ip", "link", "set", "lo", "up"])?;
    unpace_namespace();
    // Every destination routes to loopback, where the nat rules catch it;
    // without a route, connect() would fail before netfilter sees it.
    run(&["ip", "route", "add", "default", "dev", "lo", "src", "127.0.0.1"])?;
    apply_nft(&ruleset(PORTS))?;
    let explicit = std::net::TcpListener::bind(("127.0.0.1", PORTS.explicit)).context("bind explicit listener")?;
    let transparent =
        std::net::TcpListener::bind(("127.0.0.1", PORTS.transparent)).context("bind transparent listener")?;
    let dns_udp = std::net::UdpSocket::bind(("127.0.0.1", PORTS.dns)).context("bind DNS (UDP)")?;
    let diag = secureops_proxy::sockdiag::socket().context("open sock_diag")?;
    let dns_tcp = std::net::TcpListener::bind(("127.0.0.1", PORTS.dns)).context("bind DNS (TCP)")?;
    fdpass::send(
        &sock,
        &[
            explicit.as_fd(),
            transparent.as_fd(),
            dns_udp.as_fd(),
            dns_tcp.as_fd(),
            diag.as_fd(),
        ],
    )
    .context("cannot hand the listeners to the supervisor")?;
    // The supervisor owns them now.
    drop((explicit, transparent, dns_udp, dns_tcp, diag));
    // The go-ahead carries the mount plan: the guard is serving and its
    // files (audit log, key, escalation socket) exist.
    let plan = Plan::recv(&mut sock)?;
    drop(sock);
    super::mounts::apply(&plan).context("mount namespace")?;
    // Our working folder is still the one from before the mounts: CMD must
    // start in the bound-back copy, where the masks are (relative paths
    // and `..` would otherwise walk the host's tree).
    super::mounts::enter(&plan.cwd).context("cannot enter the working folder")?;
    // If the supervisor dies, the run dies with it: nothing runs unguarded.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("cannot set the parent-death signal")?;
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command given")
    };
    // Landlock and seccomp bind this process and all it starts; both need
    // no-new-privs (CMD gets it again from setpriv below).
    rustix::thread::set_no_new_privs(true).context("cannot set no-new-privs")?;
    let unix_ok: Vec<_> = plan
        .private
        .iter()
        .chain(std::iter::once(&plan.cwd))
        .chain(&plan.allowed_sockets)
        .cloned()
        .collect();
    if super::landlock::abi() > 0 {
        super::landlock::apply(&unix_ok).context("landlock")?;
    }
    super::seccomp::apply().context("seccomp")?;
    super::fds::check_no_leak(&entry_fds)?;
    let url = format!("http://127.0.0.1:{}", PORTS.explicit);
    // CMD gets no capability (not even inside the namespace, so it cannot
    // touch the nftables rules or forge source addresses) and can never
    // regain one (no-new-privs: setuid binaries do not elevate).
    // Without a terminal, CMD gets a session of its own: `kill(0, …)`
    // then reaches only the run (the supervisor's process group is outside
    // the PID namespace but shares the session otherwise). With one, it
    // stays in the terminal's foreground group for job control.
    let interactive = {
        use std::io::IsTerminal;
        std::io::stdin().is_terminal() || std::io::stdout().is_terminal() || std::io::stderr().is_terminal()
    };
    let mut command = if interactive {
        Command::new(tool("setpriv")?)
    } else {
        let mut c = Command::new(tool("setsid")?);
        c.arg("--wait").arg(tool("setpriv")?);
        c
    };
    command
        .args([
            "--no-new-privs",
            "--inh-caps=-all",
            "--ambient-caps=-all",
            "--bounding-set=-all",
            "--pdeathsig=KILL",
        ])
        .arg("--")
        .arg(program);
    command.args(args);
    crate::confine::proxy_env(&mut command, &url, Some(super::LOOPBACK));
    super::init::run(command, interactive).with_context(|| format!("cannot run {program:?}"))
}

/// Every TCP connection of this namespace ends at the guard on this
/// machine, so its default congestion control must not pace
/// (`secureops_proxy::local_hop`): BBR becomes `cubic`, else `reno`.
/// The setting is the namespace's own; best effort (a kernel that refuses
/// leaves the command's connections paced: slower, still correct).
fn unpace_namespace() {
    use secureops_proxy::local_hop::{SYSCTL, UNPACED, paces};
    let Ok(current) = std::fs::read_to_string(SYSCTL) else {
        return;
    };
    if !paces(&current) {
        return;
    }
    // Silent when refused: the command's stderr is the user's.
    let _ = UNPACED.iter().any(|name| std::fs::write(SYSCTL, name).is_ok());
}

/// Folders the init takes its tools from: never the user's `PATH`, which
/// may name folders an earlier run could write (the init holds the
/// namespace's capabilities while it runs them).
const SYSTEM_PATH: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// `name` from [`SYSTEM_PATH`].
fn tool(name: &str) -> anyhow::Result<std::path::PathBuf> {
    SYSTEM_PATH
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found in {}", SYSTEM_PATH.join(":")))
}

fn run(argv: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(tool(argv[0])?)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} (is it installed?)", argv[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn apply_nft(rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new(tool("nft")?)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (install the nftables package)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft rejected the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
