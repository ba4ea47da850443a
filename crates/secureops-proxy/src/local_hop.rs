//! Congestion control of the proxy's loopback sockets.
//!
//! A loopback connection has no bottleneck link: the only limit is the CPU
//! at each end. A pacing congestion control (BBR, the system default on
//! some hosts) still spaces its sends at its own estimate of that rate, with
//! a timer per burst. Relayed through the proxy, two paced hops in a row
//! halved bulk tunnel throughput on a BBR host (bench/load/README.md,
//! "Loopback hops are not paced"). The proxy therefore moves its own
//! loopback sockets (the listeners, so every accepted client, and upstream
//! connections to loopback addresses) from `bbr` to a window-based control:
//! `cubic`, else `reno`, which any user may set. Any other system choice,
//! and every socket to another host, keeps the system's setting.
//!
//! The switch must happen before the handshake: a socket that started as
//! BBR stays paced after a later switch (the kernel keeps its pacing flag),
//! and an accepted socket takes its control from the listener.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use rustix::net::sockopt::{set_tcp_congestion, tcp_congestion};
use tokio::net::{TcpSocket, TcpStream};

/// The congestion control that paces; replaced on loopback sockets.
pub const PACED: &str = "bbr";

/// Window-based replacements, in order of preference.
pub const UNPACED: [&str; 2] = ["cubic", "reno"];

/// Moves a loopback socket (not yet connected, or a listener) off a pacing
/// congestion control. Best effort: a socket that cannot be switched keeps
/// working as it is.
pub(crate) fn unpace(socket: impl AsFd) {
    let Ok(current) = tcp_congestion(&socket) else {
        return;
    };
    if current != PACED {
        return;
    }
    for name in UNPACED {
        if set_tcp_congestion(&socket, name).is_ok() {
            return;
        }
    }
}

/// Connects to `addr`; a loopback destination gets an unpaced socket first.
pub(crate) async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    if !addr.ip().is_loopback() {
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
    if local.is_ok_and(|a| a.ip().is_loopback()) {
        unpace(listener);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// What a new socket gets from the system.
    fn system_default() -> String {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tcp_congestion(&probe).unwrap()
    }

    /// What the proxy should end up with on loopback.
    fn expected() -> Vec<String> {
        match system_default() {
            d if d == PACED => UNPACED.iter().map(|s| (*s).to_owned()).collect(),
            d => vec![d],
        }
    }

    #[tokio::test]
    async fn loopback_upstreams_and_accepted_clients_are_not_paced() {
        let expected = expected();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        unpace_listener(&listener, listener.local_addr());
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();

        let (upstream, accepted) = tokio::join!(connect(addr), listener.accept());
        let (upstream, (accepted, _)) = (upstream.unwrap(), accepted.unwrap());
        for (what, socket) in [("upstream", upstream.as_fd()), ("accepted", accepted.as_fd())] {
            let got = tcp_congestion(socket).unwrap();
            assert!(
                expected.contains(&got),
                "{what} socket uses {got}, expected one of {expected:?}"
            );
        }
    }

    #[tokio::test]
    async fn other_hosts_keep_the_system_choice() {
        let default = system_default();
        // Not loopback: the listener keeps its control (bound to a
        // non-loopback address only when the machine has one).
        let socket = TcpSocket::new_v4().unwrap();
        unpace_listener(&socket, Ok("198.18.0.1:443".parse().unwrap()));
        assert_eq!(tcp_congestion(&socket).unwrap(), default);
    }
}
