//! The egress rule grammar (`[network] egress_allowlist`, PRODUCT.md B.3).
//!
//! ```text
//! rule  = host [ ":" port ]
//! host  = name | "*." name | ipv4 | "[" ipv6 "]" | ipv4 "/" len | ipv6 "/" len
//! port  = 1..=65535 | "*"          ; absent: 80 and 443
//! ```
//!
//! In a rule list, `@NAME` stands for a preset's rules ([`crate::presets`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::cidr::{CidrError, parse_canonical_cidr};
use crate::normalize::{Host, HostError, normalize_host};

/// What a rule's host part matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleHost {
    /// Exactly this normalised name.
    Exact(String),
    /// Any name strictly below this normalised suffix (`*.` removed); never
    /// the suffix itself.
    Wildcard(String),
    /// This address. An IPv4-mapped IPv6 address is stored as IPv4.
    Ip(IpAddr),
    /// Any address in this network (host bits zero).
    Cidr(IpNet),
}

/// Which ports a rule admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// No port written: 80 and 443.
    Default,
    /// Exactly this port (never 0).
    One(u16),
    /// `:*`, every port from 1 to 65535.
    Any,
}

impl PortSpec {
    /// Ports a rule without a port suffix admits.
    pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

    /// True when `port` is allowed by this spec. Port 0 never is: nothing
    /// can be reached there.
    pub fn admits(&self, port: u16) -> bool {
        match self {
            PortSpec::Default => Self::DEFAULT_PORTS.contains(&port),
            PortSpec::One(p) => *p == port,
            PortSpec::Any => port != 0,
        }
    }
}

/// One allowlist rule: a host pattern and the ports it admits.
///
/// Parse with [`str::parse`]; [`Display`](fmt::Display) gives the canonical
/// text, which parses back to an equal rule. Values built by hand must hold
/// normalised names (see [`normalize_host`]) to ever match.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rule {
    /// The host pattern.
    pub host: RuleHost,
    /// The ports admitted.
    pub ports: PortSpec,
}

/// Why a rule was refused. Every message quotes the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The rule is empty or only whitespace.
    #[error("empty rule")]
    Empty,
    /// The text after `:` is not 1..=65535 or `*`.
    #[error("invalid port {port:?} in rule {rule:?}")]
    InvalidPort {
        /// The rule as written.
        rule: String,
        /// The port text as written.
        port: String,
    },
    /// Port 0 cannot be connected to.
    #[error("port 0 is not allowed in rule {rule:?}")]
    PortZero {
        /// The rule as written.
        rule: String,
    },
    /// The host part is not a valid name or IP literal.
    #[error("invalid host in rule {rule:?}: {source}")]
    Host {
        /// The rule as written.
        rule: String,
        /// What is wrong with the host.
        source: HostError,
    },
    /// `*` anywhere but a leading `*.` before a domain name.
    #[error("a wildcard must be \"*.\" followed by a domain name, in rule {rule:?}")]
    Wildcard {
        /// The rule as written.
        rule: String,
    },
    /// An IPv6 address without brackets: `2001:db8::1:22` could mean port 22.
    #[error("an IPv6 address must be in brackets, as in \"[2001:db8::1]:443\", in rule {rule:?}")]
    UnbracketedIpv6 {
        /// The rule as written.
        rule: String,
    },
    /// Something other than `:port` after `]`.
    #[error("unexpected text after \"]\" in rule {rule:?}")]
    AfterBracket {
        /// The rule as written.
        rule: String,
    },
    /// A URL (`https://x.com/path`) where a host was expected.
    #[error("a rule is a host with an optional port, not a URL, in rule {rule:?}")]
    Url {
        /// The rule as written.
        rule: String,
    },
    /// `@NAME` where NAME is no preset.
    #[error("unknown preset {rule:?} (known: {known})")]
    UnknownPreset {
        /// The rule as written.
        rule: String,
        /// The preset names, as rules.
        known: String,
    },
    /// A preset where exactly one rule is expected (it stands for several;
    /// rule lists expand it, see [`crate::presets::expand`]).
    #[error("{rule:?} is a preset (several rules), not a single rule")]
    Preset {
        /// The rule as written.
        rule: String,
    },
    /// The network is not a canonical CIDR.
    #[error("invalid CIDR in rule {rule:?}: {source}")]
    Cidr {
        /// The rule as written.
        rule: String,
        /// What is wrong with the CIDR.
        source: CidrError,
    },
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, RuleError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(RuleError::Empty);
        }
        if text.contains("://") {
            return Err(RuleError::Url { rule: text.into() });
        }
        if let Some(name) = text.strip_prefix('@') {
            return Err(match crate::presets::get(name) {
                Some(_) => RuleError::Preset { rule: text.into() },
                None => RuleError::UnknownPreset {
                    rule: text.into(),
                    known: crate::presets::names(),
                },
            });
        }
        let (host, port) = split_port(text)?;
        let ports = match port {
            None => PortSpec::Default,
            Some(port) => parse_port(text, port)?,
        };
        let host = parse_host(text, host)?;
        Ok(Rule { host, ports })
    }
}

impl TryFrom<String> for Rule {
    type Error = RuleError;

    fn try_from(text: String) -> Result<Self, RuleError> {
        text.parse()
    }
}

impl From<Rule> for String {
    fn from(rule: Rule) -> String {
        rule.to_string()
    }
}

/// Splits `host[:port]`, where the host may be `[v6]` or contain `/`.
fn split_port(rule: &str) -> Result<(&str, Option<&str>), RuleError> {
    if rule.starts_with('[') {
        let end = rule.find(']').map_or(rule.len(), |i| i + 1);
        let (host, rest) = rule.split_at(end);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(RuleError::AfterBracket { rule: rule.into() }),
            },
        };
    }
    if let Some(slash) = rule.find('/') {
        // CIDR: a port can only follow the prefix length.
        return Ok(match rule[slash..].find(':') {
            Some(colon) => (&rule[..slash + colon], Some(&rule[slash + colon + 1..])),
            None => (rule, None),
        });
    }
    match rule.matches(':').count() {
        0 => Ok((rule, None)),
        1 => Ok(rule.split_once(':').map_or((rule, None), |(h, p)| (h, Some(p)))),
        _ => Err(RuleError::UnbracketedIpv6 { rule: rule.into() }),
    }
}

fn parse_port(rule: &str, port: &str) -> Result<PortSpec, RuleError> {
    if port == "*" {
        return Ok(PortSpec::Any);
    }
    let invalid = || RuleError::InvalidPort {
        rule: rule.into(),
        port: port.into(),
    };
    // u16::from_str takes "+80"; a port is digits only.
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match port.parse::<u16>() {
        Ok(0) => Err(RuleError::PortZero { rule: rule.into() }),
        Ok(p) => Ok(PortSpec::One(p)),
        Err(_) => Err(invalid()),
    }
}

fn parse_host(rule: &str, host: &str) -> Result<RuleHost, RuleError> {
    let host_error = |source| RuleError::Host {
        rule: rule.into(),
        source,
    };
    if host.contains('/') {
        return parse_canonical_cidr(host)
            .map(RuleHost::Cidr)
            .map_err(|source| RuleError::Cidr {
                rule: rule.into(),
                source,
            });
    }
    if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.contains('*') {
            return Err(RuleError::Wildcard { rule: rule.into() });
        }
        return match normalize_host(suffix) {
            Ok(Host::Name(name)) => Ok(RuleHost::Wildcard(name)),
            Ok(Host::Ip(_)) | Err(HostError::Empty) => Err(RuleError::Wildcard { rule: rule.into() }),
            Err(e) => Err(host_error(e)),
        };
    }
    if host.contains('*') {
        return Err(RuleError::Wildcard { rule: rule.into() });
    }
    match normalize_host(host).map_err(host_error)? {
        Host::Name(name) => Ok(RuleHost::Exact(name)),
        Host::Ip(ip) => Ok(RuleHost::Ip(ip)),
    }
}

impl fmt::Display for RuleHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleHost::Exact(name) => f.write_str(name),
            RuleHost::Wildcard(suffix) => write!(f, "*.{suffix}"),
            RuleHost::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            RuleHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            RuleHost::Cidr(net) => write!(f, "{net}"),
        }
    }
}

impl fmt::Display for PortSpec {
    /// The suffix as written in a rule: empty, `:8443` or `:*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Default => Ok(()),
            PortSpec::One(p) => write!(f, ":{p}"),
            PortSpec::Any => f.write_str(":*"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.ports)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(host: RuleHost, ports: PortSpec) -> Result<Rule, RuleError> {
        Ok(Rule { host, ports })
    }

    fn exact(s: &str) -> RuleHost {
        RuleHost::Exact(s.into())
    }

    fn wild(s: &str) -> RuleHost {
        RuleHost::Wildcard(s.into())
    }

    fn ip(s: &str) -> RuleHost {
        RuleHost::Ip(s.parse().unwrap())
    }

    fn cidr(s: &str) -> RuleHost {
        RuleHost::Cidr(s.parse().unwrap())
    }

    #[test]
    fn valid() {
        use PortSpec::*;
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            ("name", "example.com", ok(exact("example.com"), Default), "example.com"),
            ("name port", "example.com:8443", ok(exact("example.com"), One(8443)), "example.com:8443"),
            ("name any", "example.com:*", ok(exact("example.com"), Any), "example.com:*"),
            ("name normalised", " Bücher.DE.:443 ", ok(exact("xn--bcher-kva.de"), One(443)), "xn--bcher-kva.de:443"),
            ("wildcard", "*.example.com", ok(wild("example.com"), Default), "*.example.com"),
            ("wildcard port", "*.Example.com.:8443", ok(wild("example.com"), One(8443)), "*.example.com:8443"),
            ("wildcard tld", "*.com", ok(wild("com"), Default), "*.com"),
            ("ipv4", "203.0.113.7", ok(ip("203.0.113.7"), Default), "203.0.113.7"),
            ("ipv4 any", "203.0.113.7:*", ok(ip("203.0.113.7"), Any), "203.0.113.7:*"),
            ("ipv6", "[2001:DB8::1]", ok(ip("2001:db8::1"), Default), "[2001:db8::1]"),
            ("ipv6 port", "[2001:db8::1]:22", ok(ip("2001:db8::1"), One(22)), "[2001:db8::1]:22"),
            ("ipv6 mapped", "[::ffff:10.0.0.1]:22", ok(ip("10.0.0.1"), One(22)), "10.0.0.1:22"),
            ("cidr4", "10.0.0.0/8", ok(cidr("10.0.0.0/8"), Default), "10.0.0.0/8"),
            ("cidr4 port", "10.0.0.0/8:5432", ok(cidr("10.0.0.0/8"), One(5432)), "10.0.0.0/8:5432"),
            ("cidr6", "2001:db8::/32", ok(cidr("2001:db8::/32"), Default), "2001:db8::/32"),
            ("cidr6 port", "2001:db8::/32:443", ok(cidr("2001:db8::/32"), One(443)), "2001:db8::/32:443"),
            ("cidr6 any", "2001:db8::/32:*", ok(cidr("2001:db8::/32"), Any), "2001:db8::/32:*"),
            ("max port", "x.com:65535", ok(exact("x.com"), One(65535)), "x.com:65535"),
            ("underscore", "_sip._tcp.x.com", ok(exact("_sip._tcp.x.com"), Default), "_sip._tcp.x.com"),
        ];
        for (case, input, want, text) in cases {
            let got = input.parse::<Rule>();
            assert_eq!(got, want, "case {case:?}");
            let rule = got.unwrap();
            assert_eq!(rule.to_string(), text, "case {case:?} display");
            assert_eq!(text.parse::<Rule>().unwrap(), rule, "case {case:?} round trip");
        }
    }

    #[test]
    fn invalid() {
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            ("empty", "", "empty rule"),
            ("blank", "   ", "empty rule"),
            ("port too big", "x.com:99999", r#"invalid port "99999" in rule "x.com:99999""#),
            ("port zero", "x.com:0", r#"port 0 is not allowed in rule "x.com:0""#),
            ("port empty", "x.com:", r#"invalid port "" in rule "x.com:""#),
            ("port plus", "x.com:+80", r#"invalid port "+80" in rule "x.com:+80""#),
            ("port name", "x.com:https", r#"invalid port "https" in rule "x.com:https""#),
            ("port star twice", "x.com:**", r#"invalid port "**" in rule "x.com:**""#),
            ("star", "*", r#"a wildcard must be "*." followed by a domain name, in rule "*""#),
            ("star port", "*:443", r#"a wildcard must be "*." followed by a domain name, in rule "*:443""#),
            ("star dot", "*.", r#"a wildcard must be "*." followed by a domain name, in rule "*.""#),
            ("inner star", "a.*.com", r#"a wildcard must be "*." followed by a domain name, in rule "a.*.com""#),
            ("glued star", "*foo.com", r#"a wildcard must be "*." followed by a domain name, in rule "*foo.com""#),
            ("double star", "**.com", r#"a wildcard must be "*." followed by a domain name, in rule "**.com""#),
            ("two wildcards", "*.*.com", r#"a wildcard must be "*." followed by a domain name, in rule "*.*.com""#),
            ("wildcard ip", "*.10.0.0.1", r#"a wildcard must be "*." followed by a domain name, in rule "*.10.0.0.1""#),
            ("wildcard bad name", "*.a@b.com", r#"invalid host in rule "*.a@b.com": invalid character '@'"#),
            ("bare ipv6", "2001:db8::1", r#"an IPv6 address must be in brackets, as in "[2001:db8::1]:443", in rule "2001:db8::1""#),
            ("bare ipv6 port", "2001:db8::1:22", r#"an IPv6 address must be in brackets, as in "[2001:db8::1]:443", in rule "2001:db8::1:22""#),
            ("bracket junk", "[::1]x", r#"unexpected text after "]" in rule "[::1]x""#),
            ("bracket v4", "[127.0.0.1]", r#"invalid host in rule "[127.0.0.1]": invalid IPv6 address"#),
            ("unclosed bracket", "[::1", r#"invalid host in rule "[::1": invalid IPv6 address"#),
            ("zone", "[fe80::1%eth0]", r#"invalid host in rule "[fe80::1%eth0]": IPv6 zone identifiers are not allowed"#),
            ("numeric", "2130706433", r#"invalid host in rule "2130706433": non-canonical numeric host"#),
            ("octal", "0177.0.0.1:80", r#"invalid host in rule "0177.0.0.1:80": non-canonical numeric host"#),
            ("at", "user@x.com", r#"invalid host in rule "user@x.com": invalid character '@'"#),
            ("space", "x .com", r#"invalid host in rule "x .com": invalid character ' '"#),
            ("url", "https://x.com", r#"a rule is a host with an optional port, not a URL, in rule "https://x.com""#),
            ("path", "x.com/api", r#"invalid CIDR in rule "x.com/api": invalid IP address"#),
            ("cidr host bits", "10.0.0.1/8", r#"invalid CIDR in rule "10.0.0.1/8": host bits are set after the prefix (did you mean 10.0.0.0/8?)"#),
            ("cidr v6 host bits", "2001:db8::1/32:443", r#"invalid CIDR in rule "2001:db8::1/32:443": host bits are set after the prefix (did you mean 2001:db8::/32?)"#),
            ("cidr length", "10.0.0.0/33", r#"invalid CIDR in rule "10.0.0.0/33": invalid prefix length in CIDR"#),
            ("cidr port zero", "10.0.0.0/8:0", r#"port 0 is not allowed in rule "10.0.0.0/8:0""#),
            ("cidr bracketed", "[2001:db8::]/32", r#"unexpected text after "]" in rule "[2001:db8::]/32""#),
            ("preset alone", "@pypi", r#""@pypi" is a preset (several rules), not a single rule"#),
        ];
        for (case, input, message) in cases {
            let err = input.parse::<Rule>().unwrap_err();
            assert_eq!(err.to_string(), message, "case {case:?}");
        }
    }

    #[test]
    fn admits() {
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            (PortSpec::Default, 80, true),
            (PortSpec::Default, 443, true),
            (PortSpec::Default, 8443, false),
            (PortSpec::One(8443), 8443, true),
            (PortSpec::One(8443), 443, false),
            (PortSpec::Any, 0, false),
            (PortSpec::Default, 0, false),
            (PortSpec::Any, 1, true),
            (PortSpec::Any, 65535, true),
        ];
        for (spec, port, want) in cases {
            assert_eq!(spec.admits(port), want, "{spec:?} {port}");
        }
    }

    #[test]
    fn serde_as_string() {
        let rule: Rule = from_serde("*.example.com:8443");
        assert_eq!(rule.host, wild("example.com"));
        assert!(Rule::try_from("x.com:0".to_owned()).is_err());
        assert_eq!(String::from(rule), "*.example.com:8443");
    }

    /// serde's `try_from = "String"` path, without a format crate.
    fn from_serde(text: &str) -> Rule {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, StringDeserializer};
        let de: StringDeserializer<Error> = text.to_owned().into_deserializer();
        Rule::deserialize(de).unwrap()
    }
}
