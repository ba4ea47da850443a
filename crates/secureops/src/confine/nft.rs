//! The nftables ruleset applied inside the agent's network namespace.
//!
//! Rendered as text and applied in one transaction with `nft -f -`: readable
//! in a bug report, and gone with the namespace (no cleanup to forget).

/// Ports of the guard's listeners inside the namespace (the namespace has
/// its own port space, so fixed ports never collide between runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Explicit proxy (`HTTPS_PROXY` points here).
    pub explicit: u16,
    /// Transparent listener: every other TCP connection lands here.
    pub transparent: u16,
    /// DNS sinkhole (UDP and TCP).
    pub dns: u16,
}

/// Default ports inside the namespace.
pub const PORTS: Ports = Ports {
    explicit: 3128,
    transparent: 3129,
    dns: 53,
};

/// The ruleset: all DNS (UDP and TCP port 53, whatever address
/// `/etc/resolv.conf` names) to the sinkhole, loopback untouched, every
/// other TCP connection to the transparent listener, everything else
/// (other UDP, ICMP, raw IP, IPv6 beyond `::1`) rejected.
pub fn ruleset(ports: Ports) -> String {
    format!(
        "table inet secureops {{
  chain nat_out {{
    type nat hook output priority -100; policy accept;
    meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns}
    ip daddr 127.0.0.0/8 accept
    ip6 daddr ::1 accept
    meta nfproto ipv4 meta l4proto tcp redirect to :{transparent}
  }}
  chain filter_out {{
    type filter hook output priority 0; policy drop;
    ip daddr 127.0.0.0/8 accept
    ip6 daddr ::1 accept
    meta l4proto tcp reject with tcp reset
    reject
  }}
}}
",
        dns = ports.dns,
        transparent = ports.transparent,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_snapshot() {
        let text = ruleset(PORTS);
        assert!(text.contains("meta l4proto { tcp, udp } th dport 53 redirect to :53"));
        assert!(text.contains("meta nfproto ipv4 meta l4proto tcp redirect to :3129"));
        assert!(text.contains("type filter hook output priority 0; policy drop;"));
        // Loopback is accepted before the catch-all TCP redirect.
        let lo = text.find("ip daddr 127.0.0.0/8 accept").unwrap();
        let tcp = text.find("redirect to :3129").unwrap();
        assert!(lo < tcp);
    }
}
