//! The wildcard lint (PRODUCT.md "Policy authoring"): a wildcard that lets
//! in domains anyone can register or publish under.
//!
//! Judged against the Public Suffix List (the `psl` crate, list compiled
//! in):
//!
//! - `*.S` where `S` is a public suffix of the ICANN section (`*.com`,
//!   `*.co.uk`), or where every name directly under `S` is one (`*.ck`,
//!   `*.kawasaki.jp`): an **error**, the rule allows every domain
//!   registered there.
//! - the same with the PSL's private section (`*.github.io`,
//!   `*.s3.amazonaws.com`, `*.herokuapp.com`): a **warning**, anyone with an
//!   account there can publish a site the rule lets through.
//!
//! A name that is not on the list at all (`*.test`, `*.internal`) is not
//! judged: the list knows nothing about it. A wildcard whose base is an
//! ordinary domain but that also covers a suffix deeper down
//! (`*.amazonaws.com` covers `s3.amazonaws.com`) is not caught: the list
//! cannot be walked downwards from a name.

use std::fmt;

use crate::rules::{Rule, RuleHost};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The rule is refused (config error).
    Error,
    /// The rule is accepted, with a warning.
    Warning,
}

/// One lint finding about a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Error or warning.
    pub severity: Severity,
    /// The public suffix the wildcard sits on or above.
    pub suffix: String,
    /// Why, in one sentence (no rule text: the caller quotes the rule).
    pub why: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

/// A label that no list entry names, put in front of a name to ask whether
/// names directly under it are public suffixes (wildcard entries such as
/// `*.kawasaki.jp`).
const PROBE: &str = "secureops-lint-probe";

/// Which section of the list makes `name` a public suffix, if it is one.
fn suffix_type(name: &str) -> Option<psl::Type> {
    let found = psl::suffix(name.as_bytes())?;
    if found.is_known() && found.as_bytes() == name.as_bytes() {
        found.typ()
    } else {
        None
    }
}

/// The lint finding for `rule`, if any. Only wildcard rules are judged.
pub fn lint(rule: &Rule) -> Option<Lint> {
    let RuleHost::Wildcard(base) = &rule.host else {
        return None;
    };
    let (typ, suffix, above) = match suffix_type(base) {
        Some(typ) => (typ, base.clone(), false),
        None => {
            let probe = format!("{PROBE}.{base}");
            (suffix_type(&probe)?, format!("*.{base}"), true)
        }
    };
    let place = if above {
        format!("every name directly under {base:?} is a public suffix")
    } else {
        format!("{base:?} is a public suffix")
    };
    Some(match typ {
        psl::Type::Icann => Lint {
            severity: Severity::Error,
            suffix,
            why: format!(
                "{place}: this wildcard allows every domain anyone registers there; list the domains you need instead"
            ),
        },
        psl::Type::Private => Lint {
            severity: Severity::Warning,
            suffix,
            why: format!(
                "{place} where anyone can publish (Public Suffix List, private section): this wildcard also \
                 allows an attacker's site there; list the exact names you need"
            ),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn check(rule: &str) -> Option<Severity> {
        lint(&rule.parse().unwrap()).map(|l| l.severity)
    }

    #[test]
    fn table() {
        use Severity::*;
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            ("*.com", Some(Error)),
            ("*.com:8443", Some(Error)),
            ("*.co.uk", Some(Error)),
            ("*.uk", Some(Error)),
            ("*.kawasaki.jp", Some(Error)),
            ("*.xn--55qx5d.cn", Some(Error)),
            ("*.github.io", Some(Warning)),
            ("*.s3.amazonaws.com", Some(Warning)),
            ("*.herokuapp.com", Some(Warning)),
            ("*.compute.herokuapp.com", Some(Warning)),
            ("*.example.com", None),
            ("*.example.co.uk", None),
            ("*.a.github.io", None),
            ("*.githubusercontent.com", Some(Warning)),
            ("*.allowed.test", None),
            ("*.test", None),
            ("*.internal", None),
            ("com", None),
            ("github.io", None),
            ("10.0.0.0/8", None),
        ];
        for (rule, want) in cases {
            assert_eq!(check(rule), want, "{rule}");
        }
    }

    #[test]
    fn messages_name_the_suffix_and_the_reason() {
        let l = lint(&"*.co.uk".parse().unwrap()).unwrap();
        assert_eq!(l.suffix, "co.uk");
        assert!(l.why.contains("\"co.uk\" is a public suffix"), "{l}");
        let l = lint(&"*.github.io".parse().unwrap()).unwrap();
        assert!(l.why.contains("anyone can publish"), "{l}");
        let l = lint(&"*.kawasaki.jp".parse().unwrap()).unwrap();
        assert!(l.why.contains("every name directly under \"kawasaki.jp\""), "{l}");
    }
}
