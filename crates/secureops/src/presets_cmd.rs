//! `secureops presets [NAME]`: the built-in rule sets.

use std::process::ExitCode;

use secureops_policy::presets;

use crate::out::outln;

/// Without `name`: one line per preset (`@NAME  what it is for`). With it:
/// its rules, one a line, each with what needs it (`optional` marks rules
/// only some uses need). Exit 2 for an unknown name.
pub fn presets_cmd(name: Option<&str>) -> ExitCode {
    let Some(name) = name else {
        let width = presets::all().iter().map(|p| p.name.len() + 1).max().unwrap_or(0);
        for p in presets::all() {
            outln!("{:width$}  {}", format!("@{}", p.name), p.summary);
        }
        return ExitCode::SUCCESS;
    };
    let Some(preset) = presets::get(name) else {
        eprintln!("error: unknown preset {name:?} (known: {})", presets::names());
        return ExitCode::from(2);
    };
    let rules: Vec<String> = preset.rules.iter().map(|r| r.rule.to_string()).collect();
    let width = rules.iter().map(String::len).max().unwrap_or(0);
    for (text, r) in rules.iter().zip(&preset.rules) {
        let optional = if r.optional { "optional: " } else { "" };
        outln!("{text:width$}  # {optional}{}", r.why);
    }
    ExitCode::SUCCESS
}
