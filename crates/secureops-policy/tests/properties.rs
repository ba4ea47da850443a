//! Properties of normalisation and matching that tables cannot cover.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use secureops_policy::{Allowlist, Host, Rule, normalize_host};

/// Host-ish text: letters of both cases, digits, separators, a few
/// non-ASCII letters (no `ß`, whose upper case is `SS`), and bytes that
/// must be refused.
fn hostish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9üÜéÉ._-]{1,40}\\.?",
        "[0-9a-fA-Fx.:\\[\\]%]{1,40}",
        "[ -~]{0,20}",
        any::<IpAddr>().prop_map(|ip| ip.to_string()),
        any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
    ]
}

/// A label that is valid and never numeric (so never an IPv4 attempt).
fn label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9üé_]{0,9}"
}

fn name(labels: impl Strategy<Value = Vec<String>>) -> impl Strategy<Value = String> {
    labels.prop_map(|l| l.join("."))
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(80), Just(443), Just(8443), Just(22), any::<u16>()]
}

proptest! {
    #[test]
    fn normalisation_is_idempotent(raw in hostish()) {
        if let Ok(host) = normalize_host(&raw) {
            prop_assert_eq!(normalize_host(&host.to_string()), Ok(host.clone()), "from {:?}", raw);
            if let Host::Ip(IpAddr::V6(v6)) = host {
                prop_assert_eq!(normalize_host(&format!("[{v6}]")), Ok(host));
            }
        }
    }

    #[test]
    fn every_ip_is_its_canonical_self(ip in any::<IpAddr>()) {
        prop_assert_eq!(normalize_host(&ip.to_string()), Ok(Host::Ip(ip.to_canonical())));
    }

    #[test]
    fn case_and_trailing_dot_never_change_find(
        host in name(prop::collection::vec(label(), 1..5)),
        cut in 0usize..5,
        wildcard in any::<bool>(),
        port in port(),
    ) {
        // A rule on some suffix of the host, so both answers occur.
        let labels: Vec<&str> = host.split('.').collect();
        let suffix = labels[cut.min(labels.len() - 1)..].join(".");
        let rule = if wildcard { format!("*.{suffix}") } else { suffix };
        let list = Allowlist::parse(&[rule, "other.test:*".into()]).unwrap();
        let find = |raw: &str| normalize_host(raw).map(|h| list.find(&h, port).cloned());
        let plain = find(&host);
        prop_assert!(plain.is_ok());
        prop_assert_eq!(&find(&host.to_uppercase()), &plain);
        prop_assert_eq!(&find(&format!("{host}.")), &plain);
        prop_assert_eq!(&find(&format!("{}.", host.to_uppercase())), &plain);
    }

    #[test]
    fn wildcard_never_matches_its_apex(
        apex in name(prop::collection::vec(label(), 1..4)),
        below in name(prop::collection::vec(label(), 1..4)),
        port in port(),
    ) {
        let list = Allowlist::parse(&[format!("*.{apex}:*")]).unwrap();
        let apex_host = normalize_host(&apex).unwrap();
        prop_assert_eq!(list.find(&apex_host, port), None);
        let Host::Name(apex_name) = &apex_host else { panic!("a name") };
        prop_assert!(!list.resolves(apex_name));
        let sub = normalize_host(&format!("{below}.{apex}")).unwrap();
        prop_assert!(list.find(&sub, port).is_some());
    }

    #[test]
    fn ipv4_cidr_admits_inside_only(addr in any::<u32>(), len in 0u8..=32, bits in any::<u32>()) {
        let net = Ipv4Net::new(Ipv4Addr::from_bits(addr), len).unwrap().trunc();
        let (first, last) = (net.network().to_bits(), net.broadcast().to_bits());
        let inside = first | (bits & !net.netmask().to_bits());
        let mut outside = Vec::new();
        outside.extend(first.checked_sub(1));
        outside.extend(last.checked_add(1));
        let v4 = |b: u32| IpAddr::V4(Ipv4Addr::from_bits(b));
        check_cidr(IpNet::V4(net), &[first, inside, last].map(v4), &outside.into_iter().map(v4).collect::<Vec<_>>())?;
    }

    #[test]
    fn ipv6_cidr_admits_inside_only(addr in any::<u128>(), len in 0u8..=128, bits in any::<u128>()) {
        let net = Ipv6Net::new(Ipv6Addr::from_bits(addr), len).unwrap().trunc();
        let (first, last) = (net.network().to_bits(), net.broadcast().to_bits());
        let inside = first | (bits & !net.netmask().to_bits());
        let mut outside = Vec::new();
        outside.extend(first.checked_sub(1));
        outside.extend(last.checked_add(1));
        let v6 = |b: u128| Ipv6Addr::from_bits(b);
        // Mapped addresses are IPv4 hosts, judged by IPv4 rules.
        let probes: Vec<IpAddr> = [first, inside, last].map(v6).into_iter()
            .filter(|ip| ip.to_ipv4_mapped().is_none()).map(IpAddr::V6).collect();
        let outside: Vec<IpAddr> = outside.into_iter().map(v6)
            .filter(|ip| ip.to_ipv4_mapped().is_none()).map(IpAddr::V6).collect();
        check_cidr(IpNet::V6(net), &probes, &outside)?;
    }
}

/// The rule `NET:PORT` admits `inside` on that port only, and no `outside`.
fn check_cidr(net: IpNet, inside: &[IpAddr], outside: &[IpAddr]) -> Result<(), TestCaseError> {
    let rule: Rule = format!("{net}:5432").parse().unwrap();
    let list = Allowlist::from_rules([rule.clone()]);
    for &ip in inside {
        prop_assert_eq!(list.find(&Host::Ip(ip), 5432), Some(&rule), "{} in {}", ip, net);
        prop_assert_eq!(list.find(&Host::Ip(ip), 443), None, "{} port 443", ip);
    }
    for &ip in outside {
        prop_assert_eq!(list.find(&Host::Ip(ip), 5432), None, "{} outside {}", ip, net);
    }
    Ok(())
}
