//! Which process owns a client socket: look the connection up in the
//! kernel's TCP table of the client's network namespace (`/proc/PID/net/tcp`
//! of any process in it), take the socket inode, and find the process that
//! holds a descriptor for that inode. Failure leaves the fields empty and
//! never delays a refusal.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The process behind a connection, when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: Option<u32>,
    /// Executable path.
    pub exe: Option<String>,
    /// `uid=… ppid=… sha256=… cmd=…` for the audit entry's `detail`.
    pub detail: Option<String>,
}

/// Finds processes by their sockets in one network namespace.
#[derive(Debug, Clone)]
pub struct ProcNet {
    /// Exact socket lookups in the clients' namespace; without it the
    /// `/proc/PID/net/tcp` tables are scanned (slow on busy machines).
    diag: Option<std::sync::Arc<crate::sockdiag::SockDiag>>,
    /// Executable hashes, cached by device, inode and mtime.
    hashes: std::sync::Arc<crate::procinfo::ExeHashes>,
    /// `/proc/PID` of a process inside the namespace whose tables are read.
    anchor: PathBuf,
}

impl ProcNet {
    /// Reads the socket tables through `/proc/<pid>/net/` (any process in
    /// the namespace of the clients).
    pub fn new(pid_in_namespace: u32) -> Self {
        Self {
            diag: None,
            hashes: Default::default(),
            anchor: PathBuf::from(format!("/proc/{pid_in_namespace}")),
        }
    }

    /// The namespace of this process (clients on the same machine).
    pub fn own() -> Self {
        Self {
            diag: crate::sockdiag::SockDiag::open().ok().map(std::sync::Arc::new),
            hashes: Default::default(),
            anchor: PathBuf::from("/proc/self"),
        }
    }

    /// Uses `diag` (a sock_diag socket of the clients' namespace) for TCP.
    pub fn with_diag(mut self, diag: crate::sockdiag::SockDiag) -> Self {
        self.diag = Some(std::sync::Arc::new(diag));
        self
    }

    /// The network namespace whose tables are read (the `ns/net` link,
    /// e.g. `net:[4026532291]`), when readable.
    pub fn netns(&self) -> Option<PathBuf> {
        std::fs::read_link(self.anchor.join("ns/net")).ok()
    }

    /// The process whose TCP socket has local address `client` and remote
    /// address `server` (as the client sees them).
    pub fn tcp(&self, client: SocketAddr, server: SocketAddr) -> Process {
        if let Some(diag) = &self.diag {
            return self.owner(diag.tcp_inode(client, server));
        }
        let inode = ["net/tcp", "net/tcp6"].iter().find_map(|table| {
            let text = std::fs::read_to_string(self.anchor.join(table)).ok()?;
            find_inode(&text, client, Some(server))
        });
        self.owner(inode)
    }

    /// The process whose UDP socket sent from `client` (bound to that
    /// address, or to the wildcard address on that port).
    pub fn udp(&self, client: SocketAddr) -> Process {
        let wildcard = SocketAddr::new(
            match client {
                SocketAddr::V4(_) => IpAddr::from([0u8; 4]),
                SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
            },
            client.port(),
        );
        let inode = ["net/udp", "net/udp6"].iter().find_map(|table| {
            let text = std::fs::read_to_string(self.anchor.join(table)).ok()?;
            find_inode(&text, client, None).or_else(|| find_inode(&text, wildcard, None))
        });
        self.owner(inode)
    }

    fn owner(&self, inode: Option<u64>) -> Process {
        let Some(inode) = inode.filter(|&i| i != 0) else {
            return Process::default();
        };
        let netns = std::fs::read_link(self.anchor.join("ns/net")).ok();
        let target = format!("socket:[{inode}]");
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Process::default();
        };
        for entry in procs.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let dir = entry.path();
            // Only processes in the clients' namespace can hold the socket.
            if netns.is_some() && std::fs::read_link(dir.join("ns/net")).ok() != netns {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
                continue;
            };
            let holds = fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()));
            if holds {
                let exe = std::fs::read_link(dir.join("exe"))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned());
                let detail = Some(describe(pid, &dir, &self.hashes));
                return Process {
                    pid: Some(pid),
                    exe,
                    detail,
                };
            }
        }
        Process::default()
    }
}

/// Who the process is, beyond pid and exe: owner, parent, binary hash
/// (a swapped binary shows a new hash) and command line (bounded, control
/// characters replaced).
fn describe(pid: u32, dir: &std::path::Path, hashes: &std::sync::Arc<crate::procinfo::ExeHashes>) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(dir)
        .map(|m| m.uid().to_string())
        .unwrap_or_else(|_| "?".into());
    let ppid = crate::procinfo::parent(pid).map_or_else(|| "?".into(), |p| p.to_string());
    let sha = hashes.of_pid_cached(pid).unwrap_or_else(|| "pending".into());
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let cmd: String = String::from_utf8_lossy(&raw)
        .chars()
        .map(|c| if c == '\0' || c.is_control() { ' ' } else { c })
        .take(256)
        .collect();
    format!("uid={uid} ppid={ppid} sha256={sha} cmd={}", cmd.trim_end())
}

/// Finds the inode of the row whose local address is `local` (and remote
/// address `remote`, when given) in a `/proc/net/{tcp,udp}[6]` table.
fn find_inode(table: &str, local: SocketAddr, remote: Option<SocketAddr>) -> Option<u64> {
    let want_local = encode(local);
    let want_remote = remote.map(encode);
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (l, r, inode) = (cols.get(1)?, cols.get(2)?, cols.get(9)?);
        if !l.eq_ignore_ascii_case(&want_local) || want_remote.as_ref().is_some_and(|w| !r.eq_ignore_ascii_case(w)) {
            return None;
        }
        inode.parse().ok()
    })
}

/// The kernel's text form: address as host-order 32-bit words in hex, then
/// `:PORT` in hex.
fn encode(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

impl crate::dns::PeerAttribution for ProcNet {
    fn attribute(
        &self,
        transport: crate::dns::Transport,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<(u32, Option<String>)> {
        let found = match transport {
            crate::dns::Transport::Tcp => self.tcp(peer, local),
            crate::dns::Transport::Udp => self.udp(peer),
        };
        found.pid.map(|pid| (pid, found.exe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let found = ProcNet::own().tcp(client.local_addr().unwrap(), server);
        assert_eq!(found.pid, Some(std::process::id()));
        assert!(found.exe.is_some());
    }

    #[test]
    fn unknown_socket_is_empty() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(ProcNet::own().tcp(addr, addr), Process::default());
    }
}
