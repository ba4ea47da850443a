//! `secureops tier --probe`: the escape drill. A throwaway `run` on this
//! machine tries every door the confinement must keep shut, while this
//! process holds the host side of each: Unix sockets in `/tmp`,
//! `/run/user/UID` and `~/.ssh`, a TCP and a UDP listener on every
//! address, a host process to signal and trace, a SysV shared memory
//! segment, and the run's own audit key and log (also by a relative path). A door is `blocked` only when the attempt failed inside
//! *and* nothing arrived outside.

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::out::outln;
use anyhow::Context;

/// The attempts, run by `sh` inside the run. Each prints one line.
const DRILL: &str = r#"
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "OPEN $name: $*"; else echo "blocked $name"; fi; }
py() { python3 -c pass >/dev/null 2>&1 || { echo "skipped $1: no usable python3"; return; }; n=$1; shift; try "$n" python3 -c "$@"; }
UNIX='import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"x")'
for pair in "unix-tmp:$P_TMP" "unix-run-user:$P_RUN" "unix-ssh:$P_SSH"; do
  name=${pair%%:*}; path=${pair#*:}
  [ -n "$path" ] && py "$name" "$UNIX" "$path"
done
try signal-host kill -STOP "$P_HOSTPID"
try kill-host kill -KILL "$P_HOSTPID"
try proc-host ls "/proc/$P_HOSTPID/fd"
py ptrace-host 'import ctypes,sys; sys.exit(0 if ctypes.CDLL(None, use_errno=True).ptrace(16, int(sys.argv[1]), 0, 0) == 0 else 1)' "$P_HOSTPID"
try read-audit-key cat "$P_KEY"
try append-audit-log sh -c 'printf "{}\n" >> "$1"' sh "$P_LOG"
try read-audit-log-relative cat ../logs/audit.jsonl
try host-ipc sh -c 'ipcs -m | grep -qw "$P_SHMID"'
try kernel-setting sh -c 'echo probe > /proc/sys/kernel/hostname'
try session-shared sh -c 'test "$(cut -d" " -f6 /proc/$$/stat)" = 0'
py vsock 'import socket; socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)'
py io_uring 'import ctypes,sys; b=ctypes.create_string_buffer(120); sys.exit(0 if ctypes.CDLL(None, use_errno=True).syscall(425, 4, b) >= 0 else 1)'
py direct-tcp 'import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); s.sendall(b"x"); s.recv(1) or sys.exit(1)' "$P_HOSTIP" "$P_TCP"
py udp 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", (sys.argv[1], int(sys.argv[2]))); s.settimeout(2); s.recv(1)' "$P_HOSTIP" "$P_UDP"
py denied-dns 'import socket; socket.getaddrinfo("secureops-probe.example", 443)'
try nsenter nsenter "--net=/proc/$P_HOSTPID/ns/net" true
try new-userns unshare --user --map-root-user true
"#;

/// Counts what reaches the host side of each door.
#[derive(Default)]
struct Canary {
    hits: AtomicU64,
}

/// Runs the drill and prints a line per attempt; exit 1 if any is open.
pub fn probe() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find our own executable")?;
    let work = tempfile::Builder::new().prefix("secureops-probe-").tempdir()?;
    let logs = work.path().join("logs");
    let cwd = work.path().join("work");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&cwd)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut canaries: Vec<(&str, Arc<Canary>)> = Vec::new();
    let uid = rustix::process::geteuid().as_raw();
    let home = crate::config::agent_home();
    let tag = format!("secureops-probe-{}.sock", std::process::id());
    let mut made_ssh = false;
    let ssh = home.join(".ssh");
    if !ssh.exists() && std::fs::create_dir(&ssh).is_ok() {
        made_ssh = true;
    }
    let mut sockets = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    for (name, var, dir) in [
        ("unix-tmp", "P_TMP", PathBuf::from("/tmp")),
        ("unix-run-user", "P_RUN", PathBuf::from(format!("/run/user/{uid}"))),
        ("unix-ssh", "P_SSH", ssh.clone()),
    ] {
        let path = dir.join(&tag);
        let _ = std::fs::remove_file(&path);
        let Ok(listener) = UnixListener::bind(&path) else {
            env.push((var.into(), String::new()));
            outln!("skipped {name}: cannot bind {}", path.display());
            continue;
        };
        let canary = Arc::new(Canary::default());
        count_unix(listener, Arc::clone(&canary), Arc::clone(&stop));
        canaries.push((name, canary));
        env.push((var.into(), path.display().to_string()));
        sockets.push(path);
    }
    let tcp = TcpListener::bind("0.0.0.0:0")?;
    let udp = UdpSocket::bind("0.0.0.0:0")?;
    env.push(("P_TCP".into(), tcp.local_addr()?.port().to_string()));
    env.push(("P_UDP".into(), udp.local_addr()?.port().to_string()));
    env.push(("P_HOSTIP".into(), host_ip()));
    let tcp_canary = Arc::new(Canary::default());
    let udp_canary = Arc::new(Canary::default());
    count_tcp(tcp, Arc::clone(&tcp_canary), Arc::clone(&stop));
    count_udp(udp, Arc::clone(&udp_canary), Arc::clone(&stop));
    canaries.push(("direct-tcp", tcp_canary));
    canaries.push(("udp", udp_canary));
    let mut host = Command::new("sleep")
        .arg("120")
        .spawn()
        .context("cannot start a host process")?;
    env.push(("P_HOSTPID".into(), host.id().to_string()));
    // A SysV shared memory segment of the host's (the run has its own IPC
    // namespace).
    let shmid = Command::new("ipcmk")
        .args(["-M", "64"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .last()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "none".into());
    env.push(("P_SHMID".into(), shmid.clone()));
    let log = logs.join("audit.jsonl");
    let key = crate::config::run_audit_default().1;
    env.push(("P_LOG".into(), log.display().to_string()));
    env.push(("P_KEY".into(), key.display().to_string()));
    let out = Command::new(&exe)
        .arg("run")
        .arg("--audit")
        .arg(&log)
        .args(["--", "sh", "-c", DRILL])
        .envs(env)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .output()
        .context("cannot start the throwaway run")?;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut open = 0;
    if !out.status.success() && text.trim().is_empty() {
        outln!(
            "OPEN run: the throwaway run failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        open += 1;
    }
    for line in text.lines() {
        let name = line.split_whitespace().nth(1).unwrap_or("").trim_end_matches(':');
        let outside = canaries
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| c.hits.load(Ordering::SeqCst));
        if line.starts_with("blocked") && outside > 0 {
            outln!("OPEN {name}: {outside} connection(s) or datagram(s) reached the host");
            open += 1;
        } else {
            if line.starts_with("OPEN") {
                open += 1;
            }
            outln!("{line}");
        }
    }
    // The host process must still run, and not be stopped.
    let state = std::fs::read_to_string(format!("/proc/{}/stat", host.id())).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("gone");
    if state == "T" || state == "gone" || state == "Z" {
        outln!("OPEN host-process: it is {state} after the drill");
        open += 1;
    }
    let _ = host.kill();
    let _ = host.wait();
    let _ = Command::new("ipcrm").args(["-m", &shmid]).status();
    for path in &sockets {
        let _ = std::fs::remove_file(path);
    }
    if made_ssh {
        let _ = std::fs::remove_dir(&ssh);
    }
    Ok(if open == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A global IPv4 address of this host (else loopback): the drill's
/// direct connections aim at it.
fn host_ip() -> String {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

/// Polls `accept` (a non-blocking accept or a timed receive) until the
/// drill is over, counting what arrives.
fn count(c: Arc<Canary>, stop: Arc<AtomicBool>, mut accept: impl FnMut() -> bool + Send + 'static) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if accept() {
                c.hits.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
}

fn count_unix(l: UnixListener, c: Arc<Canary>, stop: Arc<AtomicBool>) {
    let _ = l.set_nonblocking(true);
    count(c, stop, move || {
        let got = l.accept().is_ok();
        std::thread::sleep(Duration::from_millis(10));
        got
    });
}

fn count_tcp(l: TcpListener, c: Arc<Canary>, stop: Arc<AtomicBool>) {
    let _ = l.set_nonblocking(true);
    count(c, stop, move || {
        let got = l.accept().map(|(mut s, _)| s.read(&mut [0u8; 16])).is_ok();
        std::thread::sleep(Duration::from_millis(10));
        got
    });
}

fn count_udp(u: UdpSocket, c: Arc<Canary>, stop: Arc<AtomicBool>) {
    let _ = u.set_read_timeout(Some(Duration::from_millis(50)));
    count(c, stop, move || u.recv(&mut [0u8; 16]).is_ok());
}
