//! Exact socket lookup through netlink `sock_diag` (`NETLINK_SOCK_DIAG`,
//! `SOCK_DIAG_BY_FAMILY` without a dump): the kernel finds one TCP socket by
//! its 4-tuple and returns its inode and owner uid. Reading
//! `/proc/net/tcp` instead walks the whole connection table (milliseconds on
//! a busy machine); this is one hash lookup.
//!
//! The request and reply are fixed-layout structs (`linux/inet_diag.h`),
//! encoded by hand here: no `unsafe`, no extra dependency.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const HEADER: usize = 16;
const REQUEST: usize = HEADER + 56;
/// Offset of `idiag_inode` in the reply (header + inet_diag_msg fields).
const INODE_AT: usize = HEADER + 68;

/// A `NETLINK_SOCK_DIAG` socket (created in the clients' network namespace).
#[derive(Debug)]
pub struct SockDiag {
    sock: Mutex<OwnedFd>,
    seq: AtomicU32,
}

impl SockDiag {
    /// Opens a sock_diag socket in the current network namespace.
    pub fn open() -> std::io::Result<Self> {
        Ok(Self::from_fd(socket()?))
    }

    /// Wraps a sock_diag socket opened elsewhere (inside a namespace).
    pub fn from_fd(fd: OwnedFd) -> Self {
        let _ = rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_millis(200)),
        );
        Self {
            sock: Mutex::new(fd),
            seq: AtomicU32::new(1),
        }
    }

    /// The inode of the TCP socket whose local address is `client` and
    /// remote address `server`, if it exists.
    pub fn tcp_inode(&self, client: SocketAddr, server: SocketAddr) -> Option<u64> {
        let family = match (client.ip(), server.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => AF_INET,
            (IpAddr::V6(_), IpAddr::V6(_)) => AF_INET6,
            _ => return None,
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let req = request(family, client, server, seq);
        let sock = self.sock.lock().ok()?;
        rustix::net::send(sock.as_fd(), &req, rustix::net::SendFlags::empty()).ok()?;
        let mut buf = [0u8; 512];
        // Replies to earlier, timed-out requests may still be queued: skip
        // anything that is not ours.
        for _ in 0..4 {
            let (n, _) = rustix::net::recv(sock.as_fd(), &mut buf, rustix::net::RecvFlags::empty()).ok()?;
            let reply = buf.get(..n)?;
            if u32_at(reply, 8)? != seq {
                continue;
            }
            if u16_at(reply, 4)? != SOCK_DIAG_BY_FAMILY {
                return None; // NLMSG_ERROR: no such socket
            }
            return u32_at(reply, INODE_AT).map(u64::from).filter(|&i| i != 0);
        }
        let _ = NLMSG_ERROR;
        None
    }
}

/// A raw sock_diag socket in the current network namespace (to be handed
/// to a supervisor outside it).
pub fn socket() -> std::io::Result<OwnedFd> {
    // Close-on-exec: a command started later must never hold it (its
    // replies are matched by sequence number only).
    Ok(rustix::net::socket_with(
        rustix::net::AddressFamily::NETLINK,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        Some(rustix::net::netlink::SOCK_DIAG),
    )?)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// `nlmsghdr` + `inet_diag_req_v2` for an exact lookup.
fn request(family: u8, src: SocketAddr, dst: SocketAddr, seq: u32) -> [u8; REQUEST] {
    let mut m = [0u8; REQUEST];
    m[0..4].copy_from_slice(&(REQUEST as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    let r = &mut m[HEADER..];
    r[0] = family;
    r[1] = IPPROTO_TCP;
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // all states
    // inet_diag_sockid: ports and addresses in network order.
    r[8..10].copy_from_slice(&src.port().to_be_bytes());
    r[10..12].copy_from_slice(&dst.port().to_be_bytes());
    put_addr(&mut r[12..28], src.ip());
    put_addr(&mut r[28..44], dst.ip());
    // idiag_if = 0 (any); cookie = INET_DIAG_NOCOOKIE.
    r[48..56].copy_from_slice(&[0xff; 8]);
    m
}

fn put_addr(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_live_socket_and_not_a_dead_one() {
        let diag = SockDiag::open().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let inode = diag.tcp_inode(client.local_addr().unwrap(), server).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&client))).unwrap();
        assert_eq!(link.to_string_lossy(), format!("socket:[{inode}]"));
        let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(diag.tcp_inode(nowhere, server), None);
    }
}
