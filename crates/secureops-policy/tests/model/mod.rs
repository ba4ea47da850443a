//! The allowlist's meaning as a naive linear scan, rule by rule: the model
//! the compiled [`Allowlist`](secureops_policy::Allowlist) is checked
//! against (by `tests/properties.rs` and the `host_match` fuzz target,
//! which includes this file).
#![allow(dead_code)]

use ipnet::{IpNet, Ipv4Net};
use secureops_policy::{Host, PortSpec, Rule, RuleHost};

/// Whether `rule` admits `host` on `port`.
pub fn admits(rule: &Rule, host: &Host, port: u16) -> bool {
    rule.ports.admits(port)
        && match (host, &rule.host) {
            (Host::Name(name), _) => names(rule, name),
            (Host::Ip(ip), RuleHost::Ip(want)) => ip.to_canonical() == want.to_canonical(),
            (Host::Ip(ip), RuleHost::Cidr(net)) => canonical(*net).contains(&ip.to_canonical()),
            (Host::Ip(_), _) => false,
        }
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is the IPv4 one
/// (`10.0.0.0/8`): addresses are judged in their canonical form.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => n
            .network()
            .to_ipv4_mapped()
            .and_then(|v4| Ipv4Net::new(v4, n.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        other => other,
    }
}

/// Whether a name rule covers `name`, whatever the port (`*.d` never
/// covers `d`).
pub fn names(rule: &Rule, name: &str) -> bool {
    match &rule.host {
        RuleHost::Exact(want) => name == want,
        RuleHost::Wildcard(suffix) => name
            .strip_suffix(suffix.as_str())
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        _ => false,
    }
}

/// How specific an admitting rule is, smaller first, as `find` documents:
/// exact host before pattern, longer suffix or prefix first, a named port
/// before the default ports before `:*`, then the first written.
pub fn rank(rule: &Rule, index: usize) -> (u8, i32, u8, usize) {
    let (class, length) = match &rule.host {
        RuleHost::Exact(_) | RuleHost::Ip(_) => (0, 0),
        RuleHost::Wildcard(suffix) => (1, -(suffix.len() as i32)),
        RuleHost::Cidr(net) => (1, -i32::from(canonical(*net).prefix_len())),
    };
    let port = match rule.ports {
        PortSpec::One(_) => 0,
        PortSpec::Default => 1,
        PortSpec::Any => 2,
    };
    (class, length, port, index)
}

/// The rule the model picks for `host` on `port`.
pub fn find<'r>(rules: &'r [Rule], host: &Host, port: u16) -> Option<&'r Rule> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| admits(r, host, port))
        .min_by_key(|&(i, r)| rank(r, i))
        .map(|(_, r)| r)
}
