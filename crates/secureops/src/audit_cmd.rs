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
        AuditCommand::Show { file, decision, json } => show(&file, decision, json),
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
    let want = decision.map(|d| match d {
        DecisionFilter::Allow => "allow",
        DecisionFilter::Deny => "deny",
        DecisionFilter::Escalate => "escalate",
    });
    let mut out = crate::out::stdout();
    if !json {
        writeln!(
            out,
            "{:<27} {:<8} {:<24} {:<32} REASON",
            "TIME", "DECISION", "PID/EXE", "HOST:PORT"
        )?;
    }
    // Bytes, not `lines()`: a damaged line must not stop the listing, and
    // `--json` passes each line through byte for byte.
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line?;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        let field = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
        if want.is_some_and(|w| field("decision") != w) {
            continue;
        }
        if json {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            continue;
        }
        // start/stop rows: the kind in the decision column, the writer
        // (for start) as the process, no destination.
        let kind = field("kind");
        let lifecycle = kind == "start" || kind == "stop";
        let who = match (v.get("pid").and_then(serde_json::Value::as_u64), field("exe")) {
            (Some(pid), exe) => format!("{pid}/{}", exe.rsplit('/').next().unwrap_or(exe)),
            (None, _) => "-".to_owned(),
        };
        let dest = match (v.get("port").and_then(serde_json::Value::as_u64), field("host")) {
            (_, "") => "-".to_owned(),
            (Some(port), host) => format!("{host}:{port}"),
            (None, host) => host.to_owned(),
        };
        let mut reason = field("reason").to_owned();
        if let Some(detail) = v.get("detail").and_then(serde_json::Value::as_str) {
            reason.push_str(" (");
            reason.push_str(detail);
            reason.push(')');
        }
        writeln!(
            out,
            "{:<27} {:<8} {:<24} {:<32} {}",
            field("ts"),
            if lifecycle { kind } else { field("decision") },
            who,
            dest,
            reason
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `secureops keygen --out FILE`.
pub fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let fingerprint =
        secureops_audit::generate_key(out).with_context(|| format!("cannot create key {}", out.display()))?;
    outln!("wrote {} (private, 0600) and {}.pub", out.display(), out.display());
    outln!("fingerprint {fingerprint}");
    Ok(ExitCode::SUCCESS)
}
