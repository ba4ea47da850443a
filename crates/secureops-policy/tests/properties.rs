//! Properties of normalisation and matching that tables cannot cover.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod model;

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

/// A small universe of labels, so rules and hosts collide often.
fn small_name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "ex", "test", "xn--bcher-kva"]),
        1..4,
    )
    .prop_map(|l| l.join("."))
}

fn small_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        prop::sample::select(vec![
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 9)),
        ]),
        any::<IpAddr>(),
    ]
}

/// Rule text over the small universe: every rule kind, every port kind.
fn small_rule() -> impl Strategy<Value = Rule> {
    let host = prop_oneof![
        small_name(),
        small_name().prop_map(|n| format!("*.{n}")),
        small_ip().prop_map(|ip| match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }),
        prop::sample::select(vec![
            "10.0.0.0/8",
            "10.1.0.0/16",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8:100::/40"
        ])
        .prop_map(str::to_owned),
    ];
    let port = prop::sample::select(vec!["", ":22", ":80", ":443", ":8443", ":*"]);
    (host, port).prop_map(|(h, p)| format!("{h}{p}").parse().unwrap())
}

/// Pieces of hostile host text: an allowed name, a denied one, separators
/// and encodings that other parsers read differently.
fn hostile_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => small_name(),
        2 => small_name().prop_map(|n| n.to_uppercase()),
        1 => Just("evil.example".to_owned()),
        2 => prop::sample::select(vec![
            ".", "..", "@", "/", "\\", ":", ":443", "%2e", "%00", "\0", " ", "\t", "#", "?", "*", "*.",
            "[", "]", "%", "xn--", "0x7f", "127.1", "::ffff:", "\u{3002}", "\u{ff0e}", "\u{200b}",
        ])
        .prop_map(str::to_owned),
    ]
}

proptest! {
    #[test]
    fn allowlist_agrees_with_a_linear_model(
        rules in prop::collection::vec(small_rule(), 0..10),
        host in prop_oneof![small_name().prop_map(Host::Name), small_ip().prop_map(|ip| Host::Ip(ip.to_canonical()))],
        port in prop::sample::select(vec![0u16, 1, 22, 80, 443, 8443, 65535]),
    ) {
        // Names reach the allowlist normalised.
        let host = match host {
            Host::Name(n) => normalize_host(&n).unwrap(),
            ip => ip,
        };
        let list = Allowlist::from_rules(rules.clone());
        let naive = model::find(&rules, &host, port);
        prop_assert_eq!(list.find(&host, port), naive, "{} port {} with {:?}", host, port, rules);
        if let Host::Name(name) = &host {
            prop_assert_eq!(list.resolves(name), rules.iter().any(|r| model::names(r, name)), "{} with {:?}", name, rules);
        }
    }

    /// Normalisation only folds case, drops one trailing dot and applies
    /// UTS #46 (IDNA): hostile text around an allowed name never normalises to it,
    /// and the result is a fixed point.
    #[test]
    fn normalisation_never_turns_a_denied_host_into_an_allowed_one(
        allowed in prop::collection::vec(small_name(), 1..4),
        pieces in prop::collection::vec(hostile_piece(), 1..5),
        port in prop::sample::select(vec![80u16, 443, 22]),
    ) {
        let raw = pieces.concat();
        let rules: Vec<String> = allowed.iter().map(|n| format!("{n}:*")).chain(["*.b.test:*".to_owned()]).collect();
        let list = Allowlist::parse(&rules).unwrap();
        let Ok(host) = normalize_host(&raw) else { return Ok(()) };
        prop_assert_eq!(normalize_host(&host.to_string()), Ok(host.clone()), "idempotent from {:?}", raw);
        if list.find(&host, port).is_none() {
            return Ok(());
        }
        let Host::Name(name) = &host else {
            return Err(TestCaseError::fail(format!("{raw:?} became the address {host}")));
        };
        // ASCII text: only case and one trailing dot may differ. Other
        // text: exactly what UTS #46 makes of it (`a\u{3002}b` is `a.b`
        // to every IDNA resolver too).
        let folded = if raw.is_ascii() {
            raw.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(&raw).map_err(|e| TestCaseError::fail(format!("{raw:?}: {e}")))?
        };
        let plain = folded.strip_suffix('.').unwrap_or(&folded);
        prop_assert_eq!(plain, name.as_str(), "{:?} let through as {}", raw, name);
    }
}
