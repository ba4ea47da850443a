//! Congestion control of the proxy's loopback sockets.
//!
//! A loopback connection has no bottleneck link: the only limit is the CPU
//! at each end. A pacing congestion control (BBR, the system default on
//! some hosts) still spaces its sends at its own estimate of that rate, with
//! a timer per burst. Relayed through the proxy, that costs bulk tunnels
//! about a fifth to a third of their throughput on a BBR host
//! (bench/load/README.md, "Loopback hops are not paced"). Where the
//! system default paces, the proxy therefore moves its own loopback sockets
//! (listeners bound to a loopback address, whose accepted sockets inherit
//! the choice, and upstream connections to loopback addresses) to a
//! window-based control: `cubic`, else `reno` (which every user may set).
//! Sockets to other addresses, including this machine's own non-loopback
//! ones, keep the system's setting.
//!
//! The switch must happen before the handshake: a socket that started as
//! BBR stays paced after a later switch (the kernel keeps its pacing flag),
//! and an accepted socket takes its control from the listener.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use rustix::net::sockopt::set_tcp_congestion;
use tokio::net::{TcpSocket, TcpStream};

/// The default congestion control of new sockets, per network namespace.
pub const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Window-based replacements, in order of preference.
pub const UNPACED: [&str; 2] = ["cubic", "reno"];

/// Whether the congestion control `name` paces: BBR, in any version.
pub fn paces(name: &str) -> bool {
    name.trim().starts_with("bbr")
}

/// Whether new sockets of this process's network namespace pace (read once).
fn default_paces() -> bool {
    static PACES: OnceLock<bool> = OnceLock::new();
    *PACES.get_or_init(|| std::fs::read_to_string(SYSCTL).is_ok_and(|d| paces(&d)))
}

/// Moves a loopback socket (not yet connected, or a listener) off a pacing
/// default. Best effort: a socket that cannot be switched keeps working as
/// it is.
pub(crate) fn unpace(socket: impl AsFd) {
    if !default_paces() {
        return;
    }
    for name in UNPACED {
        if set_tcp_congestion(&socket, name).is_ok() {
            return;
        }
    }
}

/// Whether `addr` is a loopback address, IPv4-mapped ones included.
fn loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Connects to `addr`; a loopback destination gets an unpaced socket first.
pub(crate) async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    if !loopback(addr) {
        return TcpStream::connect(addr).await;
    }
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    unpace(&socket);
    socket.connect(addr).await
}

/// Unpaces a listener bound to a loopback address (its accepted sockets
/// inherit the choice).
pub(crate) fn unpace_listener(listener: &impl AsFd, local: io::Result<SocketAddr>) {
    if local.is_ok_and(loopback) {
        unpace(listener);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rustix::net::sockopt::tcp_congestion;

    use super::*;

    #[tokio::test]
    async fn loopback_upstreams_and_accepted_clients_are_not_paced() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        unpace_listener(&listener, listener.local_addr());
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();

        let (upstream, accepted) = tokio::join!(connect(addr), listener.accept());
        let (upstream, (accepted, _)) = (upstream.unwrap(), accepted.unwrap());
        for (what, socket) in [("upstream", upstream.as_fd()), ("accepted", accepted.as_fd())] {
            let got = tcp_congestion(socket).unwrap();
            assert!(!paces(&got), "{what} socket uses {got}");
        }
    }

    #[test]
    fn only_loopback_addresses_are_unpaced() {
        for (addr, want) in [
            ("127.0.0.1:443", true),
            ("127.9.9.9:443", true),
            ("[::1]:443", true),
            ("[::ffff:127.0.0.1]:443", true),
            ("198.18.0.1:443", false),
            ("[::ffff:198.18.0.1]:443", false),
            ("[2001:db8::1]:443", false),
        ] {
            assert_eq!(loopback(addr.parse().unwrap()), want, "{addr}");
        }
        // A listener elsewhere keeps the system's choice.
        let socket = TcpSocket::new_v4().unwrap();
        let before = tcp_congestion(&socket).unwrap();
        unpace_listener(&socket, Ok("198.18.0.1:443".parse().unwrap()));
        assert_eq!(tcp_congestion(&socket).unwrap(), before);
    }

    #[test]
    fn bbr_in_any_version_paces() {
        assert!(paces("bbr\n") && paces("bbr2") && paces("bbr3"));
        assert!(!paces("cubic") && !paces("reno") && !paces("dctcp"));
    }
}
