//! Presets: a rule `@NAME` stands for a built-in set of rules (PRODUCT.md
//! "Policy authoring"), e.g. `@pypi` for `pypi.org` and
//! `files.pythonhosted.org`.
//!
//! Each preset is a data file in `crates/secureops-policy/presets/`,
//! compiled in. Format, one rule a line:
//!
//! ```text
//! # @NAME: one line saying what it is for        <- first line: the summary
//! # Sources: where the hosts come from            <- more comments
//! RULE            # what needs this host
//! optional RULE   # needed by some uses only
//! ```
//!
//! Every rule is allowed when the preset is used; `optional` only tells
//! `policy suggest` which rules it need not have seen before it proposes
//! the preset (see [`Preset::core`]).

use std::sync::LazyLock;

use crate::allowlist::Allowlist;
use crate::normalize::normalize_host;
use crate::rules::{Rule, RuleError};

/// One built-in rule set.
#[derive(Debug)]
pub struct Preset {
    /// The name, without `@`.
    pub name: &'static str,
    /// What it is for, from the file's first line.
    pub summary: &'static str,
    /// Its rules, in file order.
    pub rules: Vec<PresetRule>,
    allowlist: Allowlist,
}

/// One rule of a preset.
#[derive(Debug, Clone)]
pub struct PresetRule {
    /// The rule.
    pub rule: Rule,
    /// What needs it (the line's comment).
    pub why: &'static str,
    /// Needed by some uses of the tool only (marked `optional`).
    pub optional: bool,
}

/// The data files, in the order `secureops presets` lists them.
const FILES: [(&str, &str); 13] = [
    ("anthropic", include_str!("../presets/anthropic.txt")),
    ("crates", include_str!("../presets/crates.txt")),
    ("debian", include_str!("../presets/debian.txt")),
    ("docker", include_str!("../presets/docker.txt")),
    ("github", include_str!("../presets/github.txt")),
    ("go", include_str!("../presets/go.txt")),
    ("huggingface", include_str!("../presets/huggingface.txt")),
    ("maven", include_str!("../presets/maven.txt")),
    ("npm", include_str!("../presets/npm.txt")),
    ("openai", include_str!("../presets/openai.txt")),
    ("pypi", include_str!("../presets/pypi.txt")),
    ("rubygems", include_str!("../presets/rubygems.txt")),
    ("ubuntu", include_str!("../presets/ubuntu.txt")),
];

/// Every preset, parsed once. A file that does not parse is a build bug,
/// caught by the unit tests: its bad lines are left out rather than
/// panicking at run time.
static PRESETS: LazyLock<Vec<Preset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, text)| parse_file(name, text).unwrap_or_else(|_| empty(name)))
        .collect()
});

fn empty(name: &'static str) -> Preset {
    Preset {
        name,
        summary: "",
        rules: Vec::new(),
        allowlist: Allowlist::new(),
    }
}

/// Why a preset file did not parse (tests only: the files are ours).
#[derive(Debug, PartialEq, Eq)]
struct PresetFileError {
    /// 1-based line.
    line: usize,
    /// What is wrong.
    message: String,
}

fn parse_file(name: &'static str, text: &'static str) -> Result<Preset, PresetFileError> {
    let mut lines = text.lines().enumerate();
    let summary = lines
        .next()
        .and_then(|(_, l)| l.strip_prefix("# @"))
        .and_then(|l| l.strip_prefix(name))
        .and_then(|l| l.strip_prefix(": "))
        .ok_or(PresetFileError {
            line: 1,
            message: format!("first line must be \"# @{name}: SUMMARY\""),
        })?;
    let mut rules = Vec::new();
    for (at, line) in lines {
        let (body, why) = match line.split_once('#') {
            Some((body, why)) => (body.trim(), why.trim()),
            None => (line.trim(), ""),
        };
        if body.is_empty() {
            continue;
        }
        let err = |message: String| PresetFileError { line: at + 1, message };
        let (optional, text) = match body.strip_prefix("optional ") {
            Some(rest) => (true, rest.trim()),
            None => (false, body),
        };
        if why.is_empty() {
            return Err(err(format!("rule {text:?} has no comment saying what needs it")));
        }
        let rule: Rule = text.parse().map_err(|e: RuleError| err(e.to_string()))?;
        rules.push(PresetRule { rule, why, optional });
    }
    let allowlist = Allowlist::from_rules(rules.iter().map(|r| r.rule.clone()));
    Ok(Preset {
        name,
        summary,
        rules,
        allowlist,
    })
}

impl Preset {
    /// The rules that every use of the tool needs (not marked `optional`).
    /// `policy suggest` proposes `@NAME` once a log shows all of them.
    pub fn core(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| !r.optional).map(|r| &r.rule)
    }

    /// The preset's rules compiled, for lookups.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }
}

/// Every built-in preset, in listing order.
pub fn all() -> &'static [Preset] {
    &PRESETS
}

/// The preset called `name` (with or without the leading `@`).
pub fn get(name: &str) -> Option<&'static Preset> {
    let name = name.strip_prefix('@').unwrap_or(name);
    PRESETS.iter().find(|p| p.name == name)
}

/// The names of all presets as rules (`@anthropic, @crates, ...`), for
/// error messages.
pub fn names() -> String {
    PRESETS
        .iter()
        .map(|p| format!("@{}", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rules `text` stands for: a preset's rules for `@NAME`, else the one
/// rule it is.
///
/// # Errors
/// [`RuleError::UnknownPreset`] for an `@NAME` that is no preset, or the
/// rule's own parse error.
pub fn expand(text: &str) -> Result<Vec<Rule>, RuleError> {
    match text.trim().strip_prefix('@') {
        Some(name) => get(name)
            .map(|p| p.rules.iter().map(|r| r.rule.clone()).collect())
            .ok_or_else(|| RuleError::UnknownPreset {
                rule: text.trim().to_owned(),
                known: names(),
            }),
        None => Ok(vec![text.parse()?]),
    }
}

/// The name (without `@`) of the first preset, in listing order, whose rules
/// admit `host` on `port`, or `None`. `host` is normalised first (case,
/// trailing dot, punycode; an IP literal in brackets or not); a host that
/// does not normalise is covered by no preset.
///
/// This is what a refusal summary uses to say `--allow @pypi` instead of
/// `--allow files.pythonhosted.org`.
pub fn covering(host: &str, port: u16) -> Option<&'static str> {
    let host = normalize_host(host).ok()?;
    PRESETS
        .iter()
        .find(|p| p.allowlist.find(&host, port).is_some())
        .map(|p| p.name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lint::{Severity, lint};

    #[test]
    fn every_file_parses_with_a_summary_and_core_rules() {
        for (name, text) in FILES {
            let preset = parse_file(name, text).unwrap_or_else(|e| panic!("@{name}: {e:?}"));
            assert!(!preset.summary.is_empty(), "@{name}");
            assert!(preset.core().count() >= 1, "@{name} has no core rule");
            assert!(preset.rules.iter().all(|r| !r.why.is_empty()), "@{name}");
        }
        assert_eq!(all().len(), FILES.len());
        assert!(all().iter().all(|p| !p.rules.is_empty()));
    }

    #[test]
    fn no_preset_rule_trips_the_wildcard_lint() {
        for preset in all() {
            for r in &preset.rules {
                let found = lint(&r.rule);
                assert!(
                    found.as_ref().is_none_or(|l| l.severity != Severity::Error),
                    "@{}: {} {found:?}",
                    preset.name,
                    r.rule
                );
                assert!(found.is_none(), "@{}: {} warns: {found:?}", preset.name, r.rule);
            }
        }
    }

    #[test]
    fn covering_finds_the_preset() {
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases = [
            ("files.pythonhosted.org", 443, Some("pypi")),
            ("PyPI.org.", 80, Some("pypi")),
            ("registry.npmjs.org", 443, Some("npm")),
            ("static.crates.io", 443, Some("crates")),
            ("proxy.golang.org", 443, Some("go")),
            ("registry-1.docker.io", 443, Some("docker")),
            ("us.archive.ubuntu.com", 80, Some("ubuntu")),
            ("api.github.com", 443, Some("github")),
            ("github.com", 22, None),
            ("evil.test", 443, None),
            ("a@pypi.org", 443, None),
        ];
        for (host, port, want) in cases {
            assert_eq!(covering(host, port), want, "{host}:{port}");
        }
    }

    #[test]
    fn expand_and_errors() {
        assert_eq!(expand("@pypi").unwrap().len(), 2);
        assert_eq!(expand(" @pypi ").unwrap().len(), 2);
        assert_eq!(expand("x.test:8443").unwrap()[0].to_string(), "x.test:8443");
        let e = expand("@nope").unwrap_err().to_string();
        assert!(
            e.starts_with("unknown preset \"@nope\" (known: @anthropic, @crates"),
            "{e}"
        );
        assert!(get("@github").is_some() && get("github").is_some() && get("git").is_none());
    }

    #[test]
    fn bad_files_are_refused() {
        let e = parse_file("x", "# @y: wrong name\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_file("x", "# @x: ok\na.test\n").unwrap_err();
        assert_eq!((e.line, e.message.contains("no comment")), (2, true));
        let e = parse_file("x", "# @x: ok\n\n*.a.*.test # bad\n").unwrap_err();
        assert_eq!(e.line, 3);
    }
}
