//! Allowlist rules for destinations a log shows refused or learned
//! (`secureops policy suggest`, PRODUCT.md "Policy authoring").
//!
//! Pure: the caller reads the logs and says which destinations it saw;
//! this decides the rules:
//!
//! 1. a destination the current allowlist already admits is dropped, and so
//!    is one that could not be reached even with a rule (the caller's
//!    `blocked`: an unsafe address);
//! 2. a preset is proposed when the log shows every one of its core rules
//!    (those not marked `optional`), and it then stands for every seen
//!    destination it admits;
//! 3. names are grouped into one wildcard when at least [`GROUP_AT`]
//!    distinct names strictly under one registrable domain (Public Suffix
//!    List) were seen on the same ports; the wildcard is `*.` their
//!    narrowest common parent (`*.cdn.example.com` rather than
//!    `*.example.com` when all were under `cdn.`). The registrable
//!    domain is never a public suffix, so a group never sits at or crosses
//!    one; under a private-section suffix each site is its own registrable
//!    domain (`a.github.io`), so those names are never grouped together;
//! 4. the rest become one rule each. Ports 80 and 443 are the default
//!    (no suffix), any other port is kept (`host:8443`); a name seen only
//!    in DNS questions becomes a name rule.

use std::collections::{BTreeMap, BTreeSet};

use crate::allowlist::Allowlist;
use crate::lint::lint;
use crate::normalize::Host;
use crate::presets;
use crate::rules::{PortSpec, Rule, RuleHost};

/// Distinct names under one registrable domain from which a wildcard is
/// proposed.
pub const GROUP_AT: usize = 3;

/// What the logs showed for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The destination host.
    pub host: Host,
    /// The port of a connection; `None` for a DNS question.
    pub port: Option<u16>,
    /// Entries refused by policy.
    pub refused: u64,
    /// Entries let through by learn mode.
    pub learned: u64,
}

/// One proposed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The rule text (`@pypi`, `*.example.com`, `a.test:8443`).
    pub rule: String,
    /// Refused entries it covers.
    pub refused: u64,
    /// Learned entries it covers.
    pub learned: u64,
    /// The destinations it stands for (`host` or `host:port`), sorted.
    pub covers: Vec<String>,
}

/// A destination left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `host` or `host:port`.
    pub dest: String,
    /// Why no rule is proposed for it.
    pub why: String,
}

/// What [`suggest`] proposes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suggestions {
    /// Presets first (in listing order), then the most seen first.
    pub proposals: Vec<Proposal>,
    /// Destinations no rule would let through.
    pub skipped: Vec<Skipped>,
}

/// One destination: a host and the ports rule it needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    host: HostKey,
    /// `None`: the default ports (80/443, or DNS only).
    port: Option<u16>,
}

/// `Host` with an order, names before addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum HostKey {
    Name(String),
    Ip(std::net::IpAddr),
}

#[derive(Debug, Clone, Default)]
struct Tally {
    refused: u64,
    learned: u64,
    /// Ports seen (empty: DNS questions only).
    ports: BTreeSet<u16>,
}

impl Key {
    fn host(&self) -> Host {
        match &self.host {
            HostKey::Name(n) => Host::Name(n.clone()),
            HostKey::Ip(ip) => Host::Ip(*ip),
        }
    }

    fn rule(&self) -> Rule {
        let host = match &self.host {
            HostKey::Name(n) => RuleHost::Exact(n.clone()),
            HostKey::Ip(ip) => RuleHost::Ip(*ip),
        };
        Rule {
            host,
            ports: self.port.map_or(PortSpec::Default, PortSpec::One),
        }
    }

    fn label(&self) -> String {
        let host = match &self.host {
            HostKey::Name(n) => n.clone(),
            HostKey::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            HostKey::Ip(ip) => ip.to_string(),
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }
}

/// True when `list` admits `key` as it was seen: every port it was seen on,
/// or the name in DNS when it was seen only there.
fn admits(list: &Allowlist, key: &Key, tally: &Tally) -> bool {
    let host = key.host();
    match (&host, tally.ports.is_empty()) {
        (Host::Name(name), true) => list.resolves(name),
        (_, true) => false,
        (_, false) => tally.ports.iter().all(|&p| list.find(&host, p).is_some()),
    }
}

/// The rules that would let through what `seen` shows, given the
/// allowlist in force (`allowed`). `blocked` says why a host could not be
/// reached even with a rule (e.g. an address destination safety refuses),
/// or `None`.
pub fn suggest(seen: &[Seen], allowed: &Allowlist, blocked: &dyn Fn(&Host) -> Option<String>) -> Suggestions {
    let mut pool = tally(seen, allowed);
    let mut out = Suggestions::default();
    pool.retain(|key, _| match blocked(&key.host()) {
        Some(why) => {
            out.skipped.push(Skipped { dest: key.label(), why });
            false
        }
        None => true,
    });
    out.proposals.extend(take_presets(&mut pool));
    let mut rest = take_groups(&mut pool);
    rest.extend(pool.iter().map(|(key, t)| Proposal {
        rule: key.rule().to_string(),
        refused: t.refused,
        learned: t.learned,
        covers: vec![key.label()],
    }));
    rest.sort_by(|a, b| {
        (b.refused + b.learned)
            .cmp(&(a.refused + a.learned))
            .then(a.rule.cmp(&b.rule))
    });
    out.proposals.extend(rest);
    out
}

/// Merges what was seen into destinations that need a rule.
fn tally(seen: &[Seen], allowed: &Allowlist) -> BTreeMap<Key, Tally> {
    let mut pool: BTreeMap<Key, Tally> = BTreeMap::new();
    let host_key = |h: &Host| match h {
        Host::Name(n) => HostKey::Name(n.clone()),
        Host::Ip(ip) => HostKey::Ip(ip.to_canonical()),
    };
    // Connections first: a rule for a name on any port also answers DNS.
    for s in seen {
        let Some(port) = s.port.filter(|&p| p != 0) else {
            continue;
        };
        if allowed.find(&s.host, port).is_some() {
            continue;
        }
        let key = Key {
            host: host_key(&s.host),
            port: (!PortSpec::DEFAULT_PORTS.contains(&port)).then_some(port),
        };
        let t = pool.entry(key).or_default();
        t.refused += s.refused;
        t.learned += s.learned;
        t.ports.insert(port);
    }
    for s in seen.iter().filter(|s| s.port.is_none()) {
        let Host::Name(name) = &s.host else { continue };
        if allowed.resolves(name) {
            continue;
        }
        let key = pool
            .keys()
            .find(|k| k.host == HostKey::Name(name.clone()))
            .cloned()
            .unwrap_or(Key {
                host: HostKey::Name(name.clone()),
                port: None,
            });
        let t = pool.entry(key).or_default();
        t.refused += s.refused;
        t.learned += s.learned;
    }
    pool
}

/// Presets whose core rules were all seen, each with what it covers.
fn take_presets(pool: &mut BTreeMap<Key, Tally>) -> Vec<Proposal> {
    let mut out = Vec::new();
    for preset in presets::all() {
        let list = preset.allowlist();
        let covered: Vec<Key> = pool
            .iter()
            .filter(|(k, t)| admits(list, k, t))
            .map(|(k, _)| k.clone())
            .collect();
        let all_core_seen = preset.core().all(|rule| {
            let one = Allowlist::from_rules([rule.clone()]);
            covered.iter().any(|k| pool.get(k).is_some_and(|t| matches(&one, k, t)))
        });
        if covered.is_empty() || !all_core_seen {
            continue;
        }
        out.push(take(pool, format!("@{}", preset.name), covered));
    }
    out
}

/// One proposal `rule` for `keys`, which leave the pool.
fn take(pool: &mut BTreeMap<Key, Tally>, rule: String, keys: Vec<Key>) -> Proposal {
    let mut p = Proposal {
        rule,
        refused: 0,
        learned: 0,
        covers: Vec::new(),
    };
    for key in keys {
        if let Some(t) = pool.remove(&key) {
            p.refused += t.refused;
            p.learned += t.learned;
            p.covers.push(key.label());
        }
    }
    p
}

/// True when `list` admits `key` on at least one port it was seen on (or
/// by name in DNS).
fn matches(list: &Allowlist, key: &Key, tally: &Tally) -> bool {
    let host = key.host();
    match &host {
        Host::Name(name) if tally.ports.is_empty() => list.resolves(name),
        _ => tally.ports.iter().any(|&p| list.find(&host, p).is_some()),
    }
}

/// `*.DOMAIN` rules for registrable domains with enough names under them.
fn take_groups(pool: &mut BTreeMap<Key, Tally>) -> Vec<Proposal> {
    let mut groups: BTreeMap<(String, Option<u16>), Vec<Key>> = BTreeMap::new();
    for key in pool.keys() {
        let HostKey::Name(name) = &key.host else { continue };
        let Some(domain) = psl::domain_str(name) else { continue };
        if domain != name {
            groups
                .entry((domain.to_owned(), key.port))
                .or_default()
                .push(key.clone());
        }
    }
    let mut out = Vec::new();
    for ((domain, port), keys) in groups {
        if keys.len() < GROUP_AT {
            continue;
        }
        let rule = Rule {
            host: RuleHost::Wildcard(narrowest(&domain, &keys)),
            ports: port.map_or(PortSpec::Default, PortSpec::One),
        };
        // Belt and braces: the base is never a suffix.
        if lint(&rule).is_some() {
            continue;
        }
        out.push(take(pool, rule.to_string(), keys));
    }
    out
}

/// The narrowest base `B` for `*.B` covering every name of `keys` (all
/// strictly under `domain`): their longest common parent, never above
/// `domain`. `*.cdn.example.com` for `a.cdn.example.com` and
/// `b.cdn.example.com`, not `*.example.com`.
fn narrowest(domain: &str, keys: &[Key]) -> String {
    let names: Vec<&str> = keys
        .iter()
        .filter_map(|k| match &k.host {
            HostKey::Name(n) => Some(n.as_str()),
            HostKey::Ip(_) => None,
        })
        .collect();
    let mut base = domain.to_owned();
    loop {
        // One label more, taken from the first name, if every name is
        // strictly under it.
        let Some(first) = names.first() else { return base };
        let Some(head) = first.strip_suffix(base.as_str()).and_then(|h| h.strip_suffix('.')) else {
            return base;
        };
        let Some(label) = head.rsplit('.').next() else {
            return base;
        };
        let deeper = format!("{label}.{base}");
        let under = format!(".{deeper}");
        if !names.iter().all(|n| n.ends_with(&under)) {
            return base;
        }
        base = deeper;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::normalize::normalize_host;

    fn seen(host: &str, port: Option<u16>, refused: u64) -> Seen {
        Seen {
            host: normalize_host(host).unwrap(),
            port,
            refused,
            learned: 0,
        }
    }

    fn rules(s: &Suggestions) -> Vec<&str> {
        s.proposals.iter().map(|p| p.rule.as_str()).collect()
    }

    fn never(_: &Host) -> Option<String> {
        None
    }

    fn run(seen: &[Seen], allowed: &[&str]) -> Suggestions {
        suggest(seen, &Allowlist::parse(allowed).unwrap(), &never)
    }

    #[test]
    fn five_subdomains_group_two_do_not() {
        let mut input: Vec<Seen> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|l| seen(&format!("{l}.many.test"), Some(443), 1))
            .collect();
        input.push(seen("x.two.test", Some(443), 1));
        input.push(seen("y.two.test", Some(443), 1));
        let s = run(&input, &[]);
        assert_eq!(rules(&s), ["*.many.test", "x.two.test", "y.two.test"]);
        assert_eq!(s.proposals[0].refused, 5);
        assert_eq!(s.proposals[0].covers.len(), 5);
    }

    #[test]
    fn the_wildcard_is_the_narrowest_common_parent() {
        let names = ["a.cdn.x.test", "b.cdn.x.test", "c.deep.cdn.x.test"];
        let input: Vec<Seen> = names.iter().map(|n| seen(n, Some(443), 1)).collect();
        assert_eq!(rules(&run(&input, &[])), ["*.cdn.x.test"]);
        // A name at the common parent itself is not under it: one level up.
        let names = ["cdn.x.test", "a.cdn.x.test", "b.cdn.x.test"];
        let input: Vec<Seen> = names.iter().map(|n| seen(n, Some(443), 1)).collect();
        assert_eq!(rules(&run(&input, &[])), ["*.x.test"]);
        let names = ["a.one.x.test", "b.two.x.test", "c.x.test"];
        let input: Vec<Seen> = names.iter().map(|n| seen(n, Some(443), 1)).collect();
        assert_eq!(rules(&run(&input, &[])), ["*.x.test"]);
    }

    #[test]
    fn private_suffix_sites_never_group() {
        let input: Vec<Seen> = ["a", "b", "c"]
            .iter()
            .map(|l| seen(&format!("{l}.github.io"), Some(443), 1))
            .collect();
        assert_eq!(rules(&run(&input, &[])), ["a.github.io", "b.github.io", "c.github.io"]);
        // Names under one site do group, under the site.
        let input: Vec<Seen> = ["a", "b", "c"]
            .iter()
            .map(|l| seen(&format!("{l}.me.github.io"), Some(443), 1))
            .collect();
        assert_eq!(rules(&run(&input, &[])), ["*.me.github.io"]);
    }

    #[test]
    fn no_group_across_a_public_suffix() {
        // Three registrable domains under co.uk: three names, no *.co.uk.
        let input = [
            seen("a.co.uk", Some(443), 1),
            seen("b.co.uk", Some(443), 1),
            seen("c.co.uk", Some(443), 1),
        ];
        assert_eq!(rules(&run(&input, &[])), ["a.co.uk", "b.co.uk", "c.co.uk"]);
    }

    #[test]
    fn ports_are_kept_and_grouped_apart() {
        let input = [
            seen("a.p.test", Some(8443), 2),
            seen("b.p.test", Some(8443), 1),
            seen("c.p.test", Some(8443), 1),
            seen("d.p.test", Some(80), 1),
            seen("d.p.test", Some(443), 1),
            seen("db.internal", Some(5432), 3),
        ];
        let s = run(&input, &[]);
        assert_eq!(rules(&s), ["*.p.test:8443", "db.internal:5432", "d.p.test"]);
        assert_eq!(s.proposals[2].refused, 2);
    }

    #[test]
    fn dns_only_names_become_name_rules_and_merge_with_connections() {
        let input = [
            seen("only-dns.test", None, 2),
            seen("both.test", None, 1),
            seen("both.test", Some(8443), 1),
        ];
        let s = run(&input, &[]);
        assert_eq!(rules(&s), ["both.test:8443", "only-dns.test"]);
        assert_eq!(s.proposals[0].refused, 2);
    }

    #[test]
    fn already_allowed_is_dropped() {
        let input = [
            seen("ok.test", Some(443), 1),
            seen("ok.test", Some(8443), 1),
            seen("dns.ok.test", None, 1),
            seen("new.test", Some(443), 1),
        ];
        let s = run(&input, &["ok.test", "*.ok.test:22"]);
        assert_eq!(rules(&s), ["new.test", "ok.test:8443"]);
    }

    #[test]
    fn presets_when_their_core_was_seen() {
        let pip = [
            seen("pypi.org", Some(443), 3),
            seen("files.pythonhosted.org", Some(443), 5),
            seen("other.test", Some(443), 1),
        ];
        let s = run(&pip, &[]);
        assert_eq!(rules(&s), ["@pypi", "other.test"]);
        assert_eq!(s.proposals[0].refused, 8);
        // Half of @pypi's core is not enough.
        let s = run(&pip[1..], &[]);
        assert_eq!(rules(&s), ["files.pythonhosted.org", "other.test"]);
        // A preset stands for every seen host it admits, optional ones too.
        let docker = [
            seen("registry-1.docker.io", Some(443), 1),
            seen("auth.docker.io", Some(443), 1),
            seen("production.cloudflare.docker.com", Some(443), 1),
        ];
        let s = run(&docker, &[]);
        assert_eq!(rules(&s), ["@docker"]);
        assert_eq!(s.proposals[0].covers.len(), 3);
        // Not on a port the preset does not admit.
        let s = run(&[seen("registry.npmjs.org", Some(8443), 1)], &[]);
        assert_eq!(rules(&s), ["registry.npmjs.org:8443"]);
    }

    #[test]
    fn blocked_hosts_are_skipped_with_the_reason() {
        let blocked = |h: &Host| matches!(h, Host::Ip(ip) if ip.is_loopback()).then(|| "loopback".to_owned());
        let input = [seen("127.0.0.1", Some(80), 1), seen("[2001:db8::1]", Some(22), 1)];
        let s = suggest(&input, &Allowlist::new(), &blocked);
        assert_eq!(rules(&s), ["[2001:db8::1]:22"]);
        assert_eq!(s.skipped[0].dest, "127.0.0.1");
        assert_eq!(s.skipped[0].why, "loopback");
    }

    #[test]
    fn every_proposal_parses_and_admits_what_it_covers() {
        let input = [
            seen("a.g.test", Some(443), 1),
            seen("b.g.test", Some(443), 1),
            seen("c.g.test", Some(443), 1),
            seen("x.test", Some(9000), 1),
            seen("pypi.org", Some(443), 1),
            seen("files.pythonhosted.org", Some(80), 1),
            seen("203.0.113.9", Some(443), 1),
        ];
        let s = run(&input, &[]);
        let texts: Vec<&str> = rules(&s);
        let list = Allowlist::parse(&texts).unwrap();
        for i in &input {
            assert!(list.find(&i.host, i.port.unwrap()).is_some(), "{:?}", i.host);
        }
    }
}
