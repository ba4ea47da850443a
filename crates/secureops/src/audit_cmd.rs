//! `secureops audit verify|show` and `secureops keygen`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use secureops_audit::{Anchor, AnchorError, Fault};

use crate::cli::{AuditCommand, DecisionFilter};
use crate::out::outln;

/// Runs an `audit` subcommand; verify exits 1 on a bad log.
pub fn audit(action: AuditCommand) -> ExitCode {
    let result = match action {
        AuditCommand::Verify {
            files,
            pubkey,
            open,
            anchor,
        } => verify(&files, pubkey.as_deref(), open, anchor.as_deref()),
        AuditCommand::Show {
            file,
            decision,
            summary: true,
            ..
        } => crate::audit_summary::summary(&file, decision),
        AuditCommand::Show {
            file, decision, json, ..
        } => show(&file, decision, json),
        AuditCommand::Tail { file, follow } => crate::audit_tail::tail(&file, follow),
        AuditCommand::Export { file, format } => crate::ocsf::export(&file, format),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("secureops: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The anchor to check `files` against: `explicit`, else the guard's own for
/// the last file (see `secureops_audit::Anchor::find`). `Ok(Err(code))`: an
/// anchor that does not verify, reported; `Err`: one that cannot be read.
fn anchor_for(files: &[PathBuf], explicit: Option<&Path>) -> anyhow::Result<Result<Option<Anchor>, ExitCode>> {
    let found = match (explicit, files.last()) {
        (Some(file), _) => Anchor::load(file).map(Some),
        (None, Some(log)) => Anchor::find(&crate::config::state_dir().join("anchors"), log),
        (None, None) => Ok(None),
    };
    match found {
        Ok(anchor) => Ok(Ok(anchor)),
        Err(e @ AnchorError::Io { .. }) => Err(anyhow::Error::new(e).context("cannot read the log's anchor")),
        Err(e) => {
            outln!("FAILED {e}");
            Ok(Err(ExitCode::from(1)))
        }
    }
}

fn verify(files: &[PathBuf], pubkey: Option<&Path>, open: bool, anchor: Option<&Path>) -> anyhow::Result<ExitCode> {
    let pinned = match pubkey {
        Some(p) => {
            Some(secureops_audit::load_public_key(p).with_context(|| format!("cannot read key {}", p.display()))?)
        }
        None => None,
    };
    let anchor = match anchor_for(files, anchor)? {
        Ok(anchor) => anchor,
        Err(code) => return Ok(code),
    };
    match secureops_audit::verify_with_anchor(files, pinned.as_ref(), open, anchor.as_ref()) {
        Ok(report) => {
            outln!("ok {} entries", report.entries);
            if report.key_pinned {
                outln!("key pinned: {}", report.fingerprint);
            } else {
                outln!(
                    "trusting the key recorded in the log's first entry: {} (pin yours with --pubkey KEY.pub)",
                    report.fingerprint
                );
            }
            if !report.closed {
                outln!("log is open (no closing entry yet)");
            }
            match (&anchor, report.anchor_seq) {
                (Some(anchor), Some(seq)) => outln!("anchor: seq {seq} matches ({})", anchor.file().display()),
                _ => outln!(
                    "no anchor found for this log (a log cut back to an earlier stop cannot be told from a complete one)"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if e.line == 0 {
                // The whole file (unreadable, empty): no line to name.
                outln!("FAILED {}: {}", e.file.display(), e.fault);
            } else {
                outln!("FAILED {}:{}: {}", e.file.display(), e.line, e.fault);
            }
            if matches!(e.fault, Fault::NotClosed) {
                outln!("hint: a log that is still being written verifies with --open");
            }
            if let Some(anchor) = &anchor {
                match e.fault {
                    Fault::EndsBeforeAnchor { .. } | Fault::AnchorMismatch { .. } => outln!(
                        "hint: the anchor {} records seq {}, signed by {}",
                        anchor.file().display(),
                        anchor.seq(),
                        anchor.fingerprint()
                    ),
                    Fault::WrongKey { .. } if pinned.is_none() && e.line == 1 => outln!(
                        "hint: the anchor {} names key {}: the log was written anew under another key",
                        anchor.file().display(),
                        anchor.fingerprint()
                    ),
                    _ => {}
                }
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn show(file: &Path, decision: Option<DecisionFilter>, json: bool) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let want = decision.map(decision_word);
    let mut out = crate::out::stdout();
    if !json {
        writeln!(out, "{}", Row::header())?;
    }
    // Bytes, not `lines()`: a damaged line must not stop the listing, and
    // `--json` passes each line through byte for byte.
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line?;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        if want.is_some_and(|w| v.get("decision").and_then(serde_json::Value::as_str) != Some(w)) {
            continue;
        }
        if json {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            continue;
        }
        writeln!(out, "{}", Row::of(&v).text(false))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The word of a `--decision` filter, as the log writes it.
pub(crate) fn decision_word(d: DecisionFilter) -> &'static str {
    match d {
        DecisionFilter::Allow => "allow",
        DecisionFilter::Deny => "deny",
        DecisionFilter::Escalate => "escalate",
    }
}

/// One entry as `audit show` (and `audit tail`) prints it.
pub(crate) struct Row {
    ts: String,
    /// The decision, or `start`/`stop` for the log's own entries.
    word: String,
    who: String,
    dest: String,
    reason: String,
}

impl Row {
    /// The column titles.
    pub(crate) fn header() -> String {
        format!(
            "{:<27} {:<8} {:<24} {:<32} REASON",
            "TIME", "DECISION", "PID/EXE", "HOST:PORT"
        )
    }

    /// The row of a parsed entry.
    pub(crate) fn of(v: &serde_json::Value) -> Row {
        // A log is only as trustworthy as its file: nothing in it may
        // drive the terminal (escape sequences).
        let field = |k: &str| -> String {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        };
        // start/stop rows: the kind in the decision column, the writer
        // (for start) as the process, no destination.
        let kind = field("kind");
        let lifecycle = kind == "start" || kind == "stop";
        let exe = field("exe");
        let who = match v.get("pid").and_then(serde_json::Value::as_u64) {
            Some(pid) => format!("{pid}/{}", exe.rsplit('/').next().unwrap_or(&exe)),
            None => "-".to_owned(),
        };
        let host = field("host");
        let dest = match v.get("port").and_then(serde_json::Value::as_u64) {
            _ if host.is_empty() => "-".to_owned(),
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let mut reason = field("reason");
        if v.get("detail").and_then(serde_json::Value::as_str).is_some() {
            reason.push_str(" (");
            reason.push_str(&field("detail"));
            reason.push(')');
        }
        Row {
            ts: field("ts"),
            word: if lifecycle { kind } else { field("decision") },
            who,
            dest,
            reason,
        }
    }

    /// The printed line; with `colour`, the decision in ANSI colour
    /// (allow green, deny red, escalate yellow, start/stop dim).
    pub(crate) fn text(&self, colour: bool) -> String {
        let word = format!("{:<8}", self.word);
        let word = match (colour, self.word.as_str()) {
            (false, _) => word,
            (true, "allow") => format!("\x1b[32m{word}\x1b[0m"),
            (true, "deny") => format!("\x1b[31m{word}\x1b[0m"),
            (true, "escalate") => format!("\x1b[33m{word}\x1b[0m"),
            (true, _) => format!("\x1b[2m{word}\x1b[0m"),
        };
        format!(
            "{:<27} {word} {:<24} {:<32} {}",
            self.ts, self.who, self.dest, self.reason
        )
    }
}

/// `secureops keygen --out FILE`.
pub fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let fingerprint =
        secureops_audit::generate_key(out).with_context(|| format!("cannot create key {}", out.display()))?;
    outln!("wrote {} (private, 0600) and {}.pub", out.display(), out.display());
    outln!("fingerprint {fingerprint}");
    Ok(ExitCode::SUCCESS)
}
