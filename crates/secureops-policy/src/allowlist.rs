//! The compiled allowlist: hash lookups whose cost does not grow with the
//! number of rules (exact names, wildcard suffixes, IPs, CIDR prefix table).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::cidr::PrefixTable;
use crate::normalize::Host;
use crate::rules::{PortSpec, Rule, RuleError, RuleHost};

/// A rule list that failed to parse: which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// The source's message already quotes the rule, so it is not repeated here.
#[error("rule {}: {source}", index + 1)]
pub struct RuleListError {
    /// Position of the rule in the list, from 0 (the message counts from 1).
    pub index: usize,
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub source: RuleError,
}

/// The ports admitted for one host key, merged over every rule naming it.
/// Values are indices into [`Allowlist::rules`], the first rule of each kind.
#[derive(Debug, Clone, Default)]
struct PortSet {
    any: Option<usize>,
    default: Option<usize>,
    /// Sorted by port.
    ports: Vec<(u16, usize)>,
}

impl PortSet {
    fn add(&mut self, spec: PortSpec, index: usize) {
        match spec {
            PortSpec::Any => _ = self.any.get_or_insert(index),
            PortSpec::Default => _ = self.default.get_or_insert(index),
            PortSpec::One(port) => {
                if let Err(at) = self.ports.binary_search_by_key(&port, |&(p, _)| p) {
                    self.ports.insert(at, (port, index));
                }
            }
        }
    }

    /// The rule admitting `port`, the most specific one first: it is the
    /// clearest reason to quote.
    fn admit(&self, port: u16) -> Option<usize> {
        let one = self.ports.binary_search_by_key(&port, |&(p, _)| p);
        one.ok()
            .and_then(|at| self.ports.get(at))
            .map(|&(_, index)| index)
            .or(self.default.filter(|_| PortSpec::Default.admits(port)))
            .or(self.any.filter(|_| PortSpec::Any.admits(port)))
    }
}

/// The egress allowlist, compiled for lookups.
///
/// A name matches `Exact` and `Wildcard` rules only, an address `Ip` and
/// `Cidr` rules only: nothing here resolves names.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    rules: Vec<Rule>,
    exact: HashMap<String, PortSet>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, PortSet>,
    ips: HashMap<IpAddr, PortSet>,
    cidrs: PrefixTable<PortSet>,
}

impl Allowlist {
    /// An empty allowlist: it admits nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule. Its names must be normalised, as [`Rule`]'s parser makes them.
    pub fn push(&mut self, rule: Rule) {
        let index = self.rules.len();
        let ports = match &rule.host {
            RuleHost::Exact(name) => self.exact.entry(name.clone()).or_default(),
            RuleHost::Wildcard(suffix) => self.wildcard.entry(suffix.clone()).or_default(),
            RuleHost::Ip(ip) => self.ips.entry(ip.to_canonical()).or_default(),
            RuleHost::Cidr(net) => self.cidrs.entry(*net),
        };
        ports.add(rule.ports, index);
        self.rules.push(rule);
    }

    /// An allowlist of these rules.
    pub fn from_rules<I: IntoIterator<Item = Rule>>(rules: I) -> Self {
        let mut list = Self::new();
        for rule in rules {
            list.push(rule);
        }
        list
    }

    /// Parses every rule (a preset `@NAME` adds its rules); the first bad
    /// one is the error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, RuleListError> {
        let mut list = Self::new();
        for (index, text) in rules.iter().enumerate() {
            let text = text.as_ref();
            list.add(text).map_err(|source| RuleListError {
                index,
                rule: text.to_owned(),
                source,
            })?;
        }
        Ok(list)
    }

    /// Adds the rule written as `text`, or every rule of the preset when it
    /// is `@NAME`. Nothing is added on error.
    pub fn add(&mut self, text: &str) -> Result<(), RuleError> {
        for rule in crate::presets::expand(text)? {
            self.push(rule);
        }
        Ok(())
    }

    /// A rule admitting `host` on `port`, if any. Names must be normalised
    /// (as by [`normalize_host`](crate::normalize_host)).
    ///
    /// When several rules admit, the most specific is returned: an exact
    /// name before a wildcard, a longer suffix or prefix before a shorter
    /// one, a named port before the default ports before `:*`.
    pub fn find(&self, host: &Host, port: u16) -> Option<&Rule> {
        let index = match host {
            Host::Name(name) => self.find_name(name, port),
            Host::Ip(ip) => self.find_ip(*ip, port),
        };
        index.and_then(|i| self.rules.get(i))
    }

    fn find_name(&self, name: &str, port: u16) -> Option<usize> {
        let exact = self.exact.get(name).and_then(|ports| ports.admit(port));
        exact.or_else(|| {
            self.wildcard_keys(name)
                .find_map(|suffix| self.wildcard.get(suffix)?.admit(port))
        })
    }

    fn find_ip(&self, ip: IpAddr, port: u16) -> Option<usize> {
        let ip = ip.to_canonical();
        let exact = self.ips.get(&ip).and_then(|ports| ports.admit(port));
        exact.or_else(|| self.cidrs.matches(ip).find_map(|ports| ports.admit(port)))
    }

    /// True when DNS may answer for `name` (already normalised): an exact
    /// rule names it or a wildcard covers it, whatever the port. IP and
    /// CIDR rules never make a name resolvable.
    pub fn resolves(&self, name: &str) -> bool {
        self.exact.contains_key(name)
            || self
                .wildcard_keys(name)
                .any(|suffix| self.wildcard.contains_key(suffix))
    }

    /// The strict suffixes of `name`, longest first: for `a.b.c` that is
    /// `b.c`, then `c`, never `a.b.c` itself, so `*.d` never matches `d`.
    fn wildcard_keys<'a>(&self, name: &'a str) -> impl Iterator<Item = &'a str> {
        // No rules, no hashing.
        let names = if self.wildcard.is_empty() { "" } else { name };
        names.match_indices('.').filter_map(move |(dot, _)| name.get(dot + 1..))
    }

    /// How many rules were added, duplicates included.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when no rule was added.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::normalize::normalize_host;

    const RULES: &[&str] = &[
        "example.com",
        "example.com:8443",
        "any.example.net:*",
        "*.wild.test",
        "*.wild.test:8443",
        "*.deep.a.wild.test:*",
        "_acme-challenge.x.org",
        "203.0.113.7",
        "203.0.113.8:*",
        "[2001:db8::1]:22",
        "10.0.0.0/8:5432",
        "10.1.0.0/16",
        "192.168.0.0/24:*",
        "2001:db8:100::/40",
        "0.0.0.0/0:6000",
    ];

    fn list() -> Allowlist {
        Allowlist::parse(RULES).unwrap()
    }

    #[test]
    fn find_table() {
        let list = list();
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases: &[(&str, &str, u16, Option<&str>)] = &[
            ("exact 443", "example.com", 443, Some("example.com")),
            ("exact 80", "example.com", 80, Some("example.com")),
            ("exact case and dot", "EXAMPLE.com.", 443, Some("example.com")),
            ("exact other port", "example.com", 22, None),
            ("exact named port", "example.com", 8443, Some("example.com:8443")),
            ("exact subdomain", "www.example.com", 443, None),
            ("exact any", "any.example.net", 1, Some("any.example.net:*")),
            ("exact any parent", "example.net", 443, None),
            ("wild depth 1", "a.wild.test", 443, Some("*.wild.test")),
            ("wild depth 3", "x.y.z.wild.test", 80, Some("*.wild.test")),
            ("wild port", "a.wild.test", 8443, Some("*.wild.test:8443")),
            ("wild other port", "a.wild.test", 22, None),
            ("wild apex", "wild.test", 443, None),
            ("wild lookalike", "notwild.test", 443, None),
            ("wild most specific", "q.deep.a.wild.test", 443, Some("*.deep.a.wild.test:*")),
            ("longer suffix before port", "q.deep.a.wild.test", 8443, Some("*.deep.a.wild.test:*")),
            ("wild deep apex", "deep.a.wild.test", 22, None),
            ("wild deep apex default", "deep.a.wild.test", 443, Some("*.wild.test")),
            ("underscore", "_acme-challenge.x.org", 443, Some("_acme-challenge.x.org")),
            ("ip", "203.0.113.7", 443, Some("203.0.113.7")),
            ("ip other port", "203.0.113.7", 22, None),
            ("ip any", "203.0.113.8", 22, Some("203.0.113.8:*")),
            ("ip any not port 0", "203.0.113.8", 0, None),
            ("ip mapped", "[::ffff:203.0.113.7]", 443, Some("203.0.113.7")),
            ("ip6", "[2001:db8::1]", 22, Some("[2001:db8::1]:22")),
            ("ip6 default port", "[2001:db8::1]", 443, None),
            ("ip6 unbracketed", "2001:DB8::1", 22, Some("[2001:db8::1]:22")),
            ("cidr port", "10.200.3.4", 5432, Some("10.0.0.0/8:5432")),
            ("cidr other port", "10.200.3.4", 443, None),
            ("cidr longer prefix", "10.1.3.4", 443, Some("10.1.0.0/16")),
            ("cidr shorter prefix still", "10.1.3.4", 5432, Some("10.0.0.0/8:5432")),
            ("cidr any", "192.168.0.255", 9, Some("192.168.0.0/24:*")),
            ("cidr edge out", "192.168.1.0", 9, None),
            ("cidr mapped", "::ffff:192.168.0.1", 9, Some("192.168.0.0/24:*")),
            ("cidr6", "2001:db8:1ff::5", 443, Some("2001:db8:100::/40")),
            ("cidr6 out", "2001:db8:200::5", 443, None),
            ("cidr /0", "8.8.8.8", 6000, Some("0.0.0.0/0:6000")),
            ("cidr /0 not v6", "2606:4700::1111", 6000, None),
            ("name never hits ip rules", "ten.example", 5432, None),
        ];
        for &(case, host, port, want) in cases {
            let host = normalize_host(host).unwrap();
            let got = list.find(&host, port).map(ToString::to_string);
            assert_eq!(got.as_deref(), want, "case {case:?}");
        }
    }

    #[test]
    fn resolves_table() {
        let list = list();
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            ("exact", "example.com", true),
            ("exact any port", "any.example.net", true),
            ("wildcard", "a.b.wild.test", true),
            ("wildcard apex", "wild.test", false),
            ("not listed", "example.org", false),
            ("subdomain of exact", "www.example.com", false),
            ("ip text", "203.0.113.7", false),
        ];
        for (case, name, want) in cases {
            assert_eq!(list.resolves(name), want, "case {case:?}");
        }
        let only_port = Allowlist::parse(&["db.internal:5432"]).unwrap();
        assert!(only_port.resolves("db.internal"));
    }

    #[test]
    fn first_rule_is_kept_and_len_counts_all() {
        let list = Allowlist::parse(&["a.com:*", "A.com.:*", "a.com"]).unwrap();
        assert_eq!(list.len(), 3);
        let host = normalize_host("a.com").unwrap();
        assert!(std::ptr::eq(list.find(&host, 1).unwrap(), &list.rules()[0]));
        assert!(std::ptr::eq(list.find(&host, 443).unwrap(), &list.rules()[2]));
    }

    #[test]
    fn empty_admits_nothing() {
        let list = Allowlist::new();
        assert!(list.is_empty());
        assert!(list.find(&normalize_host("a.com").unwrap(), 443).is_none());
        assert!(list.find(&normalize_host("1.2.3.4").unwrap(), 443).is_none());
        assert!(!list.resolves("a.com"));
    }

    #[test]
    fn list_error() {
        let err = Allowlist::parse(&["a.com", "b.com", "x:0"]).unwrap_err();
        assert_eq!(err.index, 2);
        assert_eq!(err.rule, "x:0");
        assert_eq!(err.to_string(), r#"rule 3: port 0 is not allowed in rule "x:0""#);
    }

    #[test]
    fn from_rules_matches_parse() {
        let rules: Vec<Rule> = RULES.iter().map(|r| r.parse().unwrap()).collect();
        let list = Allowlist::from_rules(rules.clone());
        assert_eq!(list.rules(), rules.as_slice());
    }
}
