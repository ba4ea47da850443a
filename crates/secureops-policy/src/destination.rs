//! Destination safety (PRODUCT.md B.3): an allowed name must still resolve
//! to a globally reachable address, unless the operator listed the range in
//! `[network] private_destinations`.
//!
//! The tables follow the IANA IPv4 and IPv6 special-purpose address
//! registries, plus multicast, and treat IPv6 outside 2000::/3 as reserved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::cidr::{CidrError, PrefixTable, parse_canonical_cidr};

/// One row: a network and its name, or `None` for a globally reachable
/// exception inside a larger special range. First match wins.
struct Range<A> {
    net: A,
    len: u8,
    name: Option<&'static str>,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, name: Option<&'static str>) -> Range<u32> {
    Range {
        net: Ipv4Addr::new(a, b, c, d).to_bits(),
        len,
        name,
    }
}

const fn v6(segments: [u16; 8], len: u8, name: Option<&'static str>) -> Range<u128> {
    let [a, b, c, d, e, f, g, h] = segments;
    Range {
        net: Ipv6Addr::new(a, b, c, d, e, f, g, h).to_bits(),
        len,
        name,
    }
}

const METADATA: &str = "link-local (cloud metadata)";

#[rustfmt::skip]
const V4_RANGES: &[Range<u32>] = &[
    v4(0, 0, 0, 0, 8, Some("unspecified")),
    v4(10, 0, 0, 0, 8, Some("private")),
    v4(100, 64, 0, 0, 10, Some("cgnat")),
    v4(127, 0, 0, 0, 8, Some("loopback")),
    v4(169, 254, 169, 254, 32, Some(METADATA)),
    v4(169, 254, 0, 0, 16, Some("link-local")),
    v4(172, 16, 0, 0, 12, Some("private")),
    // PCP and TURN anycast: IANA marks these globally reachable.
    v4(192, 0, 0, 9, 32, None),
    v4(192, 0, 0, 10, 32, None),
    v4(192, 0, 0, 0, 24, Some("ietf-protocol")),
    v4(192, 0, 2, 0, 24, Some("documentation")),
    v4(192, 88, 99, 0, 24, Some("6to4-relay")),
    v4(192, 168, 0, 0, 16, Some("private")),
    v4(198, 18, 0, 0, 15, Some("benchmarking")),
    v4(198, 51, 100, 0, 24, Some("documentation")),
    v4(203, 0, 113, 0, 24, Some("documentation")),
    v4(224, 0, 0, 0, 4, Some("multicast")),
    v4(255, 255, 255, 255, 32, Some("broadcast")),
    v4(240, 0, 0, 0, 4, Some("reserved")),
];

/// Checked after `::`, `::1` and the forms that embed IPv4.
#[rustfmt::skip]
const V6_RANGES: &[Range<u128>] = &[
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Some("nat64-local")),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Some("discard-only")),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, Some("dummy")),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Some("teredo")),
    // Anycast and overlay services IANA marks globally reachable.
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128, None),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, None),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128, None),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, Some("benchmarking")),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, None),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, None),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, None),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, None),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Some("ietf-protocol")),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Some("documentation")),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, Some("6to4")),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Some("documentation")),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, Some("srv6")),
    // AWS's IPv6 instance metadata endpoint.
    v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128, Some("unique-local (cloud metadata)")),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Some("unique-local")),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Some("link-local")),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Some("site-local")),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Some("multicast")),
];

/// `None` when `ip` is globally reachable, else the short name of the
/// special-purpose range it is in ("loopback", "private", "documentation"...).
///
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) and NAT64
/// (`64:ff9b::a.b.c.d`, `64:ff9b:1::a.b.c.d`) addresses are judged by the
/// IPv4 address they carry. Teredo (2001::/32) and 6to4 (2002::/16) are not
/// global either: they can carry a private IPv4 address too.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => lookup(V4_RANGES, ip.to_bits(), 32),
        IpAddr::V6(ip) if ip.is_unspecified() => Some("unspecified"),
        IpAddr::V6(ip) if ip.is_loopback() => Some("loopback"),
        IpAddr::V6(ip) => match embedded_ipv4(ip) {
            Some(v4) => special_purpose(IpAddr::V4(v4)),
            None => lookup(V6_RANGES, ip.to_bits(), 128).or_else(|| {
                // Only 2000::/3 is allocated for global unicast.
                (ip.segments()[0] >> 13 != 0b001).then_some("reserved")
            }),
        },
    }
}

fn lookup<A>(table: &[Range<A>], bits: A, width: u32) -> Option<&'static str>
where
    A: Copy + Into<u128>,
{
    let bits: u128 = bits.into();
    table
        .iter()
        .find(|r| {
            let shift = width - u32::from(r.len);
            // checked_shr: a /0 would shift by the full width.
            bits.checked_shr(shift) == r.net.into().checked_shr(shift)
        })
        .and_then(|r| r.name)
}

/// The IPv4 address inside a mapped, compatible or NAT64 IPv6 address.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    const MAPPED: u128 = 0xffff;
    const COMPATIBLE: u128 = 0;
    const NAT64: u128 = 0x0064_ff9b_0000_0000_0000_0000;
    const NAT64_LOCAL: u128 = 0x0064_ff9b_0001_0000_0000_0000;
    let bits = ip.to_bits();
    let prefix = bits >> 32;
    // Truncation keeps exactly the low 32 bits, the IPv4 address.
    matches!(prefix, MAPPED | COMPATIBLE | NAT64 | NAT64_LOCAL).then(|| Ipv4Addr::from_bits(bits as u32))
}

/// The `[network] private_destinations` list: ranges the operator allows
/// even though they are not globally reachable.
#[derive(Debug, Clone, Default)]
pub struct PrivateDestinations {
    nets: PrefixTable<()>,
}

/// An entry of `[network] private_destinations` that is not an IP or CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("private destination {} ({item:?}): {source}", index + 1)]
pub struct PrivateDestinationError {
    /// Position in the list, from 0 (the message counts from 1).
    pub index: usize,
    /// The entry as written.
    pub item: String,
    /// What is wrong with it.
    pub source: CidrError,
}

impl PrivateDestinations {
    /// Parses CIDRs (`127.0.0.0/8`, `fd00::/8`, host bits zero) and bare IP
    /// addresses (a /32 or /128; IPv6 with or without brackets).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, PrivateDestinationError> {
        let mut list = Self::default();
        for (index, item) in items.iter().enumerate() {
            let item = item.as_ref();
            let net = parse_item(item.trim()).map_err(|source| PrivateDestinationError {
                index,
                item: item.to_owned(),
                source,
            })?;
            list.nets.entry(net);
        }
        Ok(list)
    }

    /// True when `ip`, or the IPv4 address a mapped or NAT64 form carries,
    /// is in a listed range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.contains(ip)
            || matches!(ip, IpAddr::V6(v6) if embedded_ipv4(v6)
                .is_some_and(|v4| self.nets.contains(IpAddr::V4(v4))))
    }
}

fn parse_item(item: &str) -> Result<IpNet, CidrError> {
    if item.contains('/') {
        return parse_canonical_cidr(item);
    }
    let bare = item.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(item);
    let ip: IpAddr = bare.parse().map_err(|_| CidrError::Address)?;
    Ok(IpNet::from(ip))
}

/// A destination refused because it is not globally reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ip} is in the {range} range, not globally reachable \
     (list it in [network] private_destinations to allow)"
)]
pub struct UnsafeDestination {
    /// The address the name resolved to (or the literal asked for).
    pub ip: IpAddr,
    /// The special-purpose range, as named by [`special_purpose`].
    pub range: &'static str,
}

/// Ok when `ip` may be connected to: globally reachable, or listed in
/// `private`. IP-literal rules do not lift this; only `private` does.
pub fn vet(ip: IpAddr, private: &PrivateDestinations) -> Result<(), UnsafeDestination> {
    match special_purpose(ip) {
        Some(range) if !private.contains(ip) => Err(UnsafeDestination { ip, range }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_table() {
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            // IPv4
            ("0.0.0.0", Some("unspecified")),
            ("0.255.255.255", Some("unspecified")),
            ("10.0.0.1", Some("private")),
            ("10.255.255.255", Some("private")),
            ("100.64.0.1", Some("cgnat")),
            ("100.127.255.255", Some("cgnat")),
            ("100.128.0.0", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("169.254.169.254", Some(METADATA)),
            ("169.254.169.253", Some("link-local")),
            ("169.254.0.1", Some("link-local")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.0", None),
            ("172.15.255.255", None),
            ("192.0.0.1", Some("ietf-protocol")),
            ("192.0.0.170", Some("ietf-protocol")),
            ("192.0.0.9", None),
            ("192.0.0.10", None),
            ("192.0.2.1", Some("documentation")),
            ("192.88.99.1", Some("6to4-relay")),
            ("192.168.1.1", Some("private")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.20.0.0", None),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.7", Some("documentation")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.254", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("9.255.255.255", None),
            ("11.0.0.0", None),
            ("223.255.255.255", None),
            // IPv6
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some(METADATA)),
            ("::ffff:8.8.8.8", None),
            ("::10.0.0.1", Some("private")),
            ("::8.8.8.8", None),
            ("64:ff9b::10.0.0.1", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some(METADATA)),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::192.168.0.1", Some("private")),
            ("64:ff9b:1::8.8.8.8", None),
            ("64:ff9b:1:1::808:808", Some("nat64-local")),
            ("100::1", Some("discard-only")),
            ("100:0:0:1::1", Some("dummy")),
            ("2001::1", Some("teredo")),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("teredo")),
            ("2001:1::1", None),
            ("2001:1::4", Some("ietf-protocol")),
            ("2001:2::1", Some("benchmarking")),
            ("2001:3::1", None),
            ("2001:4:112::1", None),
            ("2001:10::1", Some("ietf-protocol")),
            ("2001:20::1", None),
            ("2001:30::1", None),
            ("2001:1ff::1", Some("ietf-protocol")),
            ("2001:200::1", None),
            ("2001:db8::1", Some("documentation")),
            ("2002:a00:1::1", Some("6to4")),
            ("3fff::1", Some("documentation")),
            ("3fff:fff::1", Some("documentation")),
            ("3fff:1000::1", None),
            ("5f00::1", Some("srv6")),
            ("fc00::1", Some("unique-local")),
            ("fd00:ec2::254", Some("unique-local (cloud metadata)")),
            ("fdff::1", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("4000::1", Some("reserved")),
            ("::2:0:0", Some("reserved")),
            ("1000::1", Some("reserved")),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for &(ip, want) in cases {
            assert_eq!(special_purpose(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn private_destinations() {
        let private = PrivateDestinations::parse(&["127.0.0.0/8", " 10.1.2.3 ", "[fd00::1]", "fc00::/8"]).unwrap();
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            ("127.9.9.9", true),
            ("128.0.0.0", false),
            ("10.1.2.3", true),
            ("10.1.2.4", false),
            ("fd00::1", true),
            ("fd00::2", false),
            ("fc12::1", true),
            ("::ffff:127.0.0.1", true),
            ("64:ff9b::7f00:1", true),
            ("64:ff9b:1::a01:203", true),
            ("::ffff:10.1.2.4", false),
        ];
        for (ip, want) in cases {
            assert_eq!(private.contains(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn private_destinations_errors() {
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            (vec!["10.0.0.1/8"], "private destination 1 (\"10.0.0.1/8\"): host bits are set after the prefix (did you mean 10.0.0.0/8?)"),
            (vec!["127.0.0.0/8", "localhost"], "private destination 2 (\"localhost\"): invalid IP address"),
            (vec!["0177.0.0.1"], "private destination 1 (\"0177.0.0.1\"): invalid IP address"),
            (vec!["10.0.0.0/33"], "private destination 1 (\"10.0.0.0/33\"): invalid prefix length in CIDR"),
        ];
        for (items, message) in cases {
            let err = PrivateDestinations::parse(&items).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn vet_table() {
        let private = PrivateDestinations::parse(&["10.0.0.0/8", "169.254.169.254"]).unwrap();
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases: &[(&str, Result<(), &str>)] = &[
            ("8.8.8.8", Ok(())),
            ("2606:4700::1111", Ok(())),
            ("10.2.3.4", Ok(())),
            ("::ffff:10.2.3.4", Ok(())),
            ("169.254.169.254", Ok(())),
            ("169.254.169.253", Err("link-local")),
            ("127.0.0.1", Err("loopback")),
            ("64:ff9b::c0a8:1", Err("private")),
            ("203.0.113.7", Err("documentation")),
        ];
        for &(ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let got = vet(ip, &private).map_err(|e| e.range);
            assert_eq!(got, want, "{ip}");
        }
        let err = vet("203.0.113.7".parse().unwrap(), &PrivateDestinations::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "203.0.113.7 is in the documentation range, not globally reachable \
             (list it in [network] private_destinations to allow)"
        );
    }
}
