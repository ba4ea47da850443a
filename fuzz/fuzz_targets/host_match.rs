//! Host normalisation and allowlist matching. The input is a port (two
//! bytes), a host, then rules, one per line.
//!
//! Beyond "no panic": normalisation is idempotent; every rule prints to
//! text that parses back to it; `Allowlist::find` and `resolves` agree
//! with a naive linear scan of the rules (the same rule, the most
//! specific one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secureops_policy::{Allowlist, Host, Rule, normalize_host};

/// The naive model, shared with the property tests.
#[path = "../../crates/secureops-policy/tests/model/mod.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let port = u16::from_be_bytes([*hi, *lo]);
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.split('\n');
    let raw_host = lines.next().unwrap_or_default();
    let mut rules = Vec::new();
    for line in lines.take(32) {
        if let Ok(rule) = line.parse::<Rule>() {
            let again: Rule = rule
                .to_string()
                .parse()
                .unwrap_or_else(|e| panic!("{rule} does not parse back: {e}"));
            assert_eq!(again, rule, "from {line:?}");
            rules.push(rule);
        }
    }
    let list = Allowlist::from_rules(rules.clone());
    let Ok(host) = normalize_host(raw_host) else {
        return;
    };
    assert_eq!(
        normalize_host(&host.to_string()).as_ref(),
        Ok(&host),
        "idempotent, from {raw_host:?}"
    );
    assert_eq!(
        list.find(&host, port),
        model::find(&rules, &host, port),
        "{host} port {port} with {rules:?}"
    );
    if let Host::Name(name) = &host {
        let naive = rules.iter().any(|r| model::names(r, name));
        assert_eq!(list.resolves(name), naive, "{name} resolves with {rules:?}");
    }
});
