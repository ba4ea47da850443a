//! CIDR text and a prefix table whose lookups do not depend on the number
//! of networks stored, only on how many prefix lengths occur (at most 33 for
//! IPv4, 129 for IPv6).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Why a CIDR (`10.0.0.0/8`, `2001:db8::/32`) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not a canonical IP address.
    #[error("invalid IP address")]
    Address,
    /// The prefix length is not a number within the address family's size.
    #[error("invalid prefix length in CIDR")]
    PrefixLength,
    /// Bits are set after the prefix: `10.0.0.1/8` hides what was meant.
    #[error("host bits are set after the prefix (did you mean {canonical}?)")]
    HostBitsSet {
        /// The network with the host bits cleared.
        canonical: IpNet,
    },
}

/// Parses `ADDR/LEN` strictly: std address syntax, decimal length without
/// leading zeros, host bits zero.
pub(crate) fn parse_canonical_cidr(text: &str) -> Result<IpNet, CidrError> {
    let (addr, len) = text.split_once('/').ok_or(CidrError::PrefixLength)?;
    let addr: IpAddr = addr.parse().map_err(|_| CidrError::Address)?;
    let canonical_digits =
        !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) && (len == "0" || !len.starts_with('0'));
    if !canonical_digits {
        return Err(CidrError::PrefixLength);
    }
    let len: u8 = len.parse().map_err(|_| CidrError::PrefixLength)?;
    let net = IpNet::new(addr, len).map_err(|_| CidrError::PrefixLength)?;
    let canonical = net.trunc();
    if canonical != net {
        return Err(CidrError::HostBitsSet { canonical });
    }
    Ok(net)
}

/// Networks of one prefix length, keyed by their masked address bits.
#[derive(Debug, Clone)]
struct Level<V> {
    len: u8,
    nets: HashMap<u128, V>,
}

/// Networks → values, looked up longest prefix first.
///
/// IPv4 networks and addresses, including IPv4-mapped IPv6 ones, live in
/// the IPv4 half, so `::ffff:10.0.0.0/104` and `10.0.0.0/8` are the same key.
#[derive(Debug, Clone)]
pub(crate) struct PrefixTable<V> {
    /// Sorted by prefix length, longest first; only lengths in use.
    v4: Vec<Level<V>>,
    /// Same, for IPv6.
    v6: Vec<Level<V>>,
}

impl<V> Default for PrefixTable<V> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

impl<V: Default> PrefixTable<V> {
    /// The value stored for `net`, inserted as `V::default()` if absent.
    pub(crate) fn entry(&mut self, net: IpNet) -> &mut V {
        let (levels, bits, len, width) = match canonical_net(net) {
            (IpAddr::V4(a), len) => (&mut self.v4, u128::from(u32::from(a)), len, 32),
            (IpAddr::V6(a), len) => (&mut self.v6, u128::from(a), len, 128),
        };
        // Longest first: position of the first level not longer than `len`.
        let at = levels.partition_point(|l| l.len > len);
        if levels.get(at).is_none_or(|l| l.len != len) {
            levels.insert(
                at,
                Level {
                    len,
                    nets: HashMap::new(),
                },
            );
        }
        let level = &mut levels[at];
        level.nets.entry(mask(bits, len, width)).or_default()
    }
}

impl<V> PrefixTable<V> {
    /// Values of every stored network containing `ip`, longest prefix first.
    pub(crate) fn matches(&self, ip: IpAddr) -> impl Iterator<Item = &V> {
        let (levels, bits, width) = match ip.to_canonical() {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (&self.v6, u128::from(a), 128),
        };
        levels.iter().filter_map(move |l| l.nets.get(&mask(bits, l.len, width)))
    }

    /// True when some stored network contains `ip`.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.matches(ip).next().is_some()
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:0:0/96` or longer) as IPv4.
fn canonical_net(net: IpNet) -> (IpAddr, u8) {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), n.prefix_len() - 96),
            None => (net.network(), net.prefix_len()),
        },
        _ => (net.network(), net.prefix_len()),
    }
}

/// Keeps the top `len` of the low `width` bits of `bits`.
fn mask(bits: u128, len: u8, width: u32) -> u128 {
    if len == 0 {
        return 0;
    }
    let keep = (u128::MAX << (128 - u32::from(len))) >> (128 - width);
    bits & keep
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let net = |s: &str| Ok(s.parse::<IpNet>().unwrap());
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, Result<IpNet, CidrError>)> = vec![
            ("v4", "10.0.0.0/8", net("10.0.0.0/8")),
            ("v4 /0", "0.0.0.0/0", net("0.0.0.0/0")),
            ("v4 /32", "10.0.0.1/32", net("10.0.0.1/32")),
            ("v6", "2001:db8::/32", net("2001:db8::/32")),
            ("v6 /128", "::1/128", net("::1/128")),
            (
                "host bits",
                "10.0.0.1/8",
                Err(CidrError::HostBitsSet {
                    canonical: "10.0.0.0/8".parse().unwrap(),
                }),
            ),
            ("v4 too long", "10.0.0.0/33", Err(CidrError::PrefixLength)),
            ("v6 too long", "::/129", Err(CidrError::PrefixLength)),
            ("leading zero length", "10.0.0.0/08", Err(CidrError::PrefixLength)),
            ("signed length", "10.0.0.0/+8", Err(CidrError::PrefixLength)),
            ("empty length", "10.0.0.0/", Err(CidrError::PrefixLength)),
            ("no slash", "10.0.0.0", Err(CidrError::PrefixLength)),
            ("octal address", "010.0.0.0/8", Err(CidrError::Address)),
            ("short address", "10/8", Err(CidrError::Address)),
            ("name", "example.com/8", Err(CidrError::Address)),
        ];
        for (case, input, want) in cases {
            assert_eq!(parse_canonical_cidr(input), want, "case {case:?}");
        }
    }

    #[test]
    fn longest_prefix_first() {
        let mut t: PrefixTable<u8> = PrefixTable::default();
        *t.entry("10.0.0.0/8".parse().unwrap()) = 8;
        *t.entry("10.1.0.0/16".parse().unwrap()) = 16;
        *t.entry("0.0.0.0/0".parse().unwrap()) = 0;
        *t.entry("2001:db8::/32".parse().unwrap()) = 32;
        let hits: Vec<u8> = t.matches("10.1.2.3".parse().unwrap()).copied().collect();
        assert_eq!(hits, [16, 8, 0]);
        let hits: Vec<u8> = t.matches("10.2.2.3".parse().unwrap()).copied().collect();
        assert_eq!(hits, [8, 0]);
        assert!(t.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!t.contains("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn mapped_is_ipv4() {
        let mut t: PrefixTable<()> = PrefixTable::default();
        t.entry("::ffff:10.0.0.0/104".parse().unwrap());
        assert!(t.contains("10.9.9.9".parse().unwrap()));
        assert!(t.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!t.contains("11.0.0.0".parse().unwrap()));
    }
}
