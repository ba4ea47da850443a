//! `secureops completions SHELL` and `secureops man`: both generated from the
//! clap definitions in `cli.rs`, so they cannot drift from the parser.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionShell};

/// Prints the completion script for `shell`.
pub fn completions(shell: CompletionShell) -> anyhow::Result<ExitCode> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    // Into a buffer first: `generate` panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut public_command(), "secureops", &mut script);
    crate::out::stdout().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the man page: the top-level page, then one section per
/// subcommand (its synopsis, description and options), then exit status,
/// environment, files and version.
pub fn man() -> anyhow::Result<ExitCode> {
    let mut page = Vec::new();
    render(&mut page)?;
    crate::out::stdout().write_all(&page)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the whole page (roff) to `out`.
pub fn render(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut raw = Vec::new();
    render_parts(&mut raw)?;
    // Each clap_mangen part starts with the same two-line preamble
    // (defining the `Aq` string): keep the first.
    let mut seen = std::collections::HashSet::new();
    for line in String::from_utf8_lossy(&raw).lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if preamble && !seen.insert(line.to_owned()) {
            continue;
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn render_parts(out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    // The top of the page without clap_mangen's SUBCOMMANDS list, which
    // points at one page per subcommand: here they are sections below.
    let man = clap_mangen::Man::new(cmd.clone()).manual("SecureOps");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut stack: Vec<&clap::Command> = visible_subcommands(&cmd).collect();
    stack.reverse();
    while let Some(sub) = stack.pop() {
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let sub_man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        sub_man.render_synopsis_section(&mut part)?;
        sub_man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            sub_man.render_options_section(&mut part)?;
        }
        // Its sections become subsections of the command's section.
        for line in String::from_utf8_lossy(&part).lines() {
            match line.strip_prefix(".SH ") {
                Some(heading) => writeln!(out, ".SS {heading}")?,
                None => writeln!(out, "{line}")?,
            }
        }
        let children: Vec<_> = visible_subcommands(sub).collect();
        stack.extend(children.into_iter().rev());
    }
    out.write_all(TAIL.as_bytes())?;
    man.render_version_section(out)
}

/// The command line without its hidden internal subcommands, which the
/// completion generators would offer otherwise (clap cannot remove a
/// subcommand, so the top level is rebuilt; it has no arguments of its own).
fn public_command() -> clap::Command {
    let full = Cli::command();
    let top = clap::Command::new("secureops")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(true);
    let subs: Vec<clap::Command> = visible_subcommands(&full).cloned().collect();
    top.subcommands(subs)
}

fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// Hand-written sections: facts that live outside the parser.
const TAIL: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
success; \fBcheck\fR: the destination is allowed.
.TP
\fB1\fR
\fBcheck\fR: denied or escalated; \fBaudit verify\fR: the log is damaged, not closed or signed by another key; \fBtier \-\-probe\fR: an escape is open.
.TP
\fB2\fR
usage or configuration error (config errors name the line and column).
.PP
\fBrun\fR exits with the status of CMD (128+N when signal N ended it).
.SH ENVIRONMENT
.TP
\fBSECUREOPS_LOG\fR, \fBRUST_LOG\fR
log level and filter of the operational log on stderr, e.g. \fBdebug\fR.
.TP
\fBXDG_STATE_HOME\fR
the guard's state folder is \fI$XDG_STATE_HOME/secureops\fR (audit anchors; \fBrun\fR's log and key); else \fI/var/lib/secureops\fR for root and \fI~/.local/state/secureops\fR for others.
.SH FILES
.TP
\fI/etc/secureops/config.toml\fR
the configuration the packaged \fBsecureops.service\fR runs with; relative paths in a config file are relative to its folder.
.TP
\fI/var/lib/secureops\fR
the service's audit log, signing key and anchors.
.SH "SEE ALSO"
\fBsystemd.exec\fR(5), \fBsystemctl\fR(1)
"#;
