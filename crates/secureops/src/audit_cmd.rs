//! `secureops audit verify|show` and `secureops keygen`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{AuditCommand, DecisionFilter};

/// Runs an `audit` subcommand; verify exits 1 on a bad log.
pub fn audit(action: AuditCommand) -> ExitCode {
    let result = match action {
        AuditCommand::Verify { files, pubkey, open } => verify(&files, pubkey.as_deref(), open),
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

fn verify(files: &[std::path::PathBuf], pubkey: Option<&Path>, open: bool) -> anyhow::Result<ExitCode> {
    let pinned = match pubkey {
        Some(p) => {
            Some(secureops_audit::load_public_key(p).with_context(|| format!("cannot read key {}", p.display()))?)
        }
        None => None,
    };
    match secureops_audit::verify(files, pinned.as_ref(), open) {
        Ok(report) => {
            println!("ok {} entries", report.entries);
            if report.key_pinned {
                println!("key pinned: {}", report.fingerprint);
            } else {
                println!(
                    "trusting the key recorded in the log's first entry: {} (pin yours with --pubkey KEY.pub)",
                    report.fingerprint
                );
            }
            if !report.closed {
                println!("log is open (no closing entry yet)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            if e.line == 0 {
                // The whole file (unreadable, empty): no line to name.
                println!("FAILED {}: {}", e.file.display(), e.fault);
            } else {
                println!("FAILED {}:{}: {}", e.file.display(), e.line, e.fault);
            }
            if matches!(e.fault, secureops_audit::Fault::NotClosed) {
                println!("hint: a log that is still being written verifies with --open");
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
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
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
    println!("wrote {} (private, 0600) and {}.pub", out.display(), out.display());
    println!("fingerprint {fingerprint}");
    Ok(ExitCode::SUCCESS)
}
