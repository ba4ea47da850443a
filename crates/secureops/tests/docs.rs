//! `secureops completions bash|zsh|fish` and `secureops man`, checked with
//! the real shells and groff: the scripts parse and complete subcommands,
//! the page renders without a warning and has a section for every
//! subcommand that `secureops help` lists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::bin;

/// Stdout of `secureops ARGS` (which must succeed).
fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `secureops [PARENT] help` lists (without `help`).
fn subcommands(parent: &[&str]) -> Vec<String> {
    let mut args = parent.to_vec();
    args.push("--help");
    let help = stdout_of(&args);
    help.split("Commands:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Runs `program args` with `script` in a file; returns (success, stdout, stderr).
fn shell(program: &str, args: &[&str], script: &str) -> Option<(bool, String, String)> {
    if Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("completion");
    std::fs::write(&path, script).unwrap();
    let args: Vec<String> = args.iter().map(|a| a.replace("FILE", path.to_str().unwrap())).collect();
    let out = Command::new(program).args(&args).output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn bash_completion_parses_and_completes_subcommands() {
    let script = stdout_of(&["completions", "bash"]);
    let (ok, _, err) = shell("bash", &["-n", "FILE"], &script).expect("bash");
    assert!(ok, "bash -n: {err}");
    // Loaded into a real bash, the function completes `audit ex` and the
    // top level (every listed subcommand, not the internal one).
    let (ok, out, err) = shell(
        "bash",
        &[
            "-c",
            "source FILE; COMP_WORDS=(secureops audit ex); COMP_CWORD=2; _secureops secureops ex audit; \
             echo \"${COMPREPLY[@]}\"; COMP_WORDS=(secureops ''); COMP_CWORD=1; _secureops secureops '' secureops; \
             echo \"${COMPREPLY[@]}\"",
        ],
        &script,
    )
    .unwrap();
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("export"));
    let top: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    for name in subcommands(&[]) {
        assert!(top.contains(&name.as_str()), "{name} not completed: {top:?}");
    }
    assert!(!script.contains("ns-child"), "internal subcommand offered");
}

#[test]
fn zsh_completion_parses_and_registers() {
    let script = stdout_of(&["completions", "zsh"]);
    let Some((ok, _, err)) = shell("zsh", &["-n", "FILE"], &script) else {
        eprintln!("SKIP zsh_completion_parses_and_registers: no zsh (scripts/deps.sh test installs it)");
        return;
    };
    assert!(ok, "zsh -n: {err}");
    let (ok, out, err) = shell(
        "zsh",
        &[
            "-fc",
            "autoload -U compinit && compinit -u -D && source FILE && print -r -- ${_comps[secureops]}",
        ],
        &script,
    )
    .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "_secureops");
}

#[test]
fn fish_completion_parses_and_completes_subcommands() {
    let script = stdout_of(&["completions", "fish"]);
    let Some((ok, _, err)) = shell("fish", &["-n", "FILE"], &script) else {
        eprintln!("SKIP fish_completion_parses_and_completes_subcommands: no fish (scripts/deps.sh test installs it)");
        return;
    };
    assert!(ok, "fish -n: {err}");
    let (ok, out, err) = shell(
        "fish",
        &["-c", "source FILE; complete -C 'secureops audit export x --format '"],
        &script,
    )
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("ocsf")), "{out}");
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let out = Command::new(bin()).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

#[test]
fn man_page_renders_cleanly_and_covers_every_subcommand() {
    let page = stdout_of(&["man"]);
    assert!(page.contains("\n.TH secureops 1 "), "no title line");
    // -ww: every warning; -z: no output, only the diagnostics.
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (apt-get install groff-base)");
    groff.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = groff.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");

    let mut groff = Command::new("groff")
        .args(["-man", "-Tascii", "-P-cbou"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    groff.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let text = String::from_utf8(groff.wait_with_output().unwrap().stdout).unwrap();
    let top = subcommands(&[]);
    assert!(top.len() >= 12, "{top:?}");
    for name in &top {
        let heading = format!("\nSECUREOPS {}\n", name.to_uppercase());
        assert!(text.contains(&heading), "no section for {name}");
        for nested in subcommands(&[name]) {
            let heading = format!("\nSECUREOPS {} {}\n", name.to_uppercase(), nested.to_uppercase());
            assert!(text.contains(&heading), "no section for {name} {nested}");
        }
    }
    assert!(!text.contains("NS-CHILD"), "internal subcommand documented");
    for section in ["EXIT STATUS", "ENVIRONMENT", "FILES"] {
        assert!(text.contains(&format!("\n{section}\n")), "no {section}");
    }
}
