//! Allowlist rules as the config and `--allow` take them: a rule or a
//! preset (`@pypi`), checked by the wildcard lint (PRODUCT.md "Policy
//! authoring").

use secureops_policy::Allowlist;
use secureops_policy::lint::{Severity, lint};
use secureops_policy::presets;

/// Adds the rule (or every rule of the preset) written as `text` to `list`.
/// A rule that does not parse, an unknown preset or a wildcard at or above
/// a public suffix is an error (the message quotes the rule); nothing is
/// added then.
pub fn add(list: &mut Allowlist, text: &str) -> Result<(), String> {
    let rules = presets::expand(text).map_err(|e| e.to_string())?;
    for rule in &rules {
        if let Some(found) = lint(rule).filter(|l| l.severity == Severity::Error) {
            return Err(format!("{:?}: {found}", text.trim()));
        }
    }
    for rule in rules {
        list.push(rule);
    }
    Ok(())
}

/// [`add`] for a command-line flag (`--allow RULE`): the error names the
/// flag; warnings go to stderr as `warning: RULE: why`.
pub fn add_flag(list: &mut Allowlist, flag: &str, text: &str) -> Result<(), String> {
    add(list, text).map_err(|e| match e.starts_with('"') {
        true => format!("{flag} {e}"),
        false => format!("{flag} {text:?}: {e}"),
    })?;
    for w in warnings(text) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// The lint warnings for `text`, each as `RULE: why` (none for a preset:
/// their rules are checked by the tests).
pub fn warnings(text: &str) -> Vec<String> {
    let Ok(rules) = presets::expand(text) else {
        return Vec::new();
    };
    rules
        .iter()
        .filter_map(|rule| lint(rule).filter(|l| l.severity == Severity::Warning))
        .map(|found| format!("{}: {found}", text.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_lint_and_errors() {
        let mut list = Allowlist::new();
        assert_eq!(add(&mut list, "@pypi"), Ok(()));
        assert_eq!(list.len(), 2);
        let e = add(&mut list, "*.co.uk").unwrap_err();
        assert!(e.starts_with("\"*.co.uk\": \"co.uk\" is a public suffix"), "{e}");
        assert!(add(&mut list, "@nope").unwrap_err().contains("unknown preset"));
        assert_eq!(list.len(), 2);
        assert_eq!(add(&mut list, "*.github.io"), Ok(()));
        let w = warnings("*.github.io");
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("*.github.io: \"github.io\" is a public suffix where anyone can publish"));
        assert!(warnings("*.example.com").is_empty() && warnings("@github").is_empty());
    }
}
