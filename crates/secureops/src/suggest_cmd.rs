//! `secureops policy suggest LOG... [-c FILE]`: allowlist rules for what
//! audit logs show refused by policy or let through by `--learn`, as a TOML
//! fragment to paste into a config (PRODUCT.md "Policy authoring").
//!
//! Which entries count:
//! - `deny` whose reason says the destination "is not in the egress
//!   allowlist": the policy's own refusal, which a rule fixes (the proxy,
//!   the DNS sinkhole and `check` all word it so);
//! - `allow` whose reason starts with `learn:` (learn mode let it through).
//!
//! Every other refusal is left out: destination safety (private, loopback,
//! metadata addresses; DNS rebinding), credential taint, unapproved
//! escalations, malformed requests, overload, fail-closed errors. No
//! allowlist rule would let those through, or should. An IP literal that
//! destination safety refuses is left out too (named in a closing comment),
//! and so is a name whose `[dns] hosts` answers it refuses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use secureops_audit::{Entry, EntryKind, Verdict};
use secureops_policy::suggest::{Proposal, Seen, suggest};
use secureops_policy::{Host, normalize_host, vet};

use crate::config::{self, Loaded};

// The reasons written by the decision points: a refusal no rule lifted ends
// with NOT_LISTED, an entry let through by learn mode starts with LEARN_PREFIX.
use secureops_policy::learn::{LEARN_PREFIX as LEARNED, NOT_LISTED as NOT_ALLOWED};

/// Names listed in a grouped rule's comment before "...".
const NAMES_SHOWN: usize = 4;

/// What one log entry counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Refused,
    Learned,
    /// A refusal no rule fixes.
    Other,
}

/// What the logs showed: per destination, and how many refusals were left out.
#[derive(Debug, Default)]
struct Observed {
    seen: BTreeMap<(String, Option<u16>), (u64, u64)>,
    other_refusals: u64,
}

fn classify(entry: &Entry<'_>) -> Option<Counted> {
    if !matches!(entry.kind, EntryKind::Egress | EntryKind::Dns) {
        return None;
    }
    match entry.decision? {
        Verdict::Allow if entry.reason.starts_with(LEARNED) => Some(Counted::Learned),
        Verdict::Allow => None,
        Verdict::Deny if entry.reason.ends_with(NOT_ALLOWED) => Some(Counted::Refused),
        Verdict::Deny | Verdict::Escalate => Some(Counted::Other),
    }
}

impl Observed {
    /// Adds one log line; `Err` when it is not an audit entry.
    fn add_line(&mut self, line: &[u8]) -> Result<(), String> {
        let entry = Entry::parse(line).map_err(|e| e.to_string())?;
        let (Some(counted), Some(host)) = (classify(&entry), entry.host.as_deref()) else {
            return Ok(());
        };
        let port = match entry.kind {
            EntryKind::Dns => None,
            _ => entry.port,
        };
        if counted == Counted::Other {
            self.other_refusals += 1;
            return Ok(());
        }
        let slot = self.seen.entry((host.to_owned(), port)).or_default();
        match counted {
            Counted::Refused => slot.0 += 1,
            _ => slot.1 += 1,
        }
        Ok(())
    }

    /// Reads one log file. A last line without its newline (a log cut short
    /// while being written) is skipped with a warning; any other line that
    /// is not an audit entry is an error naming it.
    fn read(&mut self, path: &Path) -> anyhow::Result<()> {
        let cannot = || format!("cannot read {}", path.display());
        let mut file = BufReader::new(std::fs::File::open(path).with_context(cannot)?);
        let mut raw = Vec::new();
        for at in 1.. {
            raw.clear();
            // Line by line: a log may be far bigger than memory allows.
            if file.read_until(b'\n', &mut raw).with_context(cannot)? == 0 {
                break;
            }
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            if line.is_empty() {
                continue;
            }
            if let Err(why) = self.add_line(line) {
                // Only the last line can lack its newline.
                if !raw.ends_with(b"\n") {
                    eprintln!("warning: {}:{at}: skipped a torn last line", path.display());
                    continue;
                }
                anyhow::bail!("{}:{at}: not an audit log entry: {why}", path.display());
            }
        }
        Ok(())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .iter()
            .filter_map(|((host, port), &(refused, learned))| {
                Some(Seen {
                    host: normalize_host(host).ok()?,
                    port: *port,
                    refused,
                    learned,
                })
            })
            .collect()
    }
}

/// Why `host` cannot be reached even with a rule under `loaded`, as
/// `check` judges it: an unsafe IP literal, or `[dns] hosts` answers that
/// are all unsafe.
fn blocked(loaded: &Loaded, host: &Host) -> Option<String> {
    let known: Vec<_> = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(n) => loaded.hosts.get(n).cloned().unwrap_or_default(),
    };
    let mut verdicts = known.iter().map(|ip| vet(*ip, &loaded.private));
    match verdicts.next()? {
        Err(e) if verdicts.all(|v| v.is_err()) => Some(e.to_string()),
        _ => None,
    }
}

fn counts(p: &Proposal) -> String {
    match (p.refused, p.learned) {
        (r, 0) => format!("{r} refused"),
        (0, l) => format!("{l} learned"),
        (r, l) => format!("{r} refused, {l} learned"),
    }
}

/// The fragment for `proposals` (and the closing comments).
fn render(loaded_from: &str, logs: &[PathBuf], out: &secureops_policy::suggest::Suggestions, other: u64) -> String {
    let mut text = String::new();
    let logs: Vec<String> = logs.iter().map(|p| p.display().to_string()).collect();
    let _ = writeln!(
        text,
        "# secureops policy suggest: refused by policy or learned in {}, not allowed by {loaded_from}",
        logs.join(", ")
    );
    if out.proposals.is_empty() {
        let _ = writeln!(text, "# nothing to add");
    } else {
        let width = out.proposals.iter().map(|p| p.rule.len() + 3).max().unwrap_or(0);
        let _ = writeln!(text, "[network]\negress_allowlist = [");
        for p in &out.proposals {
            let quoted = format!("\"{}\",", p.rule);
            let mut comment = counts(p);
            if p.covers.len() > 1 || p.rule.starts_with('@') {
                let shown: Vec<&str> = p.covers.iter().take(NAMES_SHOWN).map(String::as_str).collect();
                let more = if p.covers.len() > NAMES_SHOWN { ", ..." } else { "" };
                let _ = write!(comment, ": {}{more}", shown.join(", "));
            }
            let _ = writeln!(text, "  {quoted:width$} # {comment}");
        }
        let _ = writeln!(text, "]");
    }
    for s in &out.skipped {
        let _ = writeln!(text, "# not proposed: {}: {}", s.dest, s.why);
    }
    if other > 0 {
        let _ = writeln!(
            text,
            "# left out: {other} refusals no allowlist rule lifts (destination safety, credential taint, \
             escalations, malformed requests, errors)"
        );
    }
    text
}

/// Runs `policy suggest`: the fragment on stdout; exit 2 on an unreadable
/// log or config.
pub fn suggest_cmd(logs: &[PathBuf], config_path: Option<&Path>) -> ExitCode {
    let loaded = match config::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut observed = Observed::default();
    for log in logs {
        if let Err(e) = observed.read(log) {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    let out = suggest(&observed.seen(), &loaded.allowlist, &|h| blocked(&loaded, h));
    let from = config_path.map_or_else(|| "the built-in default".to_owned(), |p| p.display().to_string());
    let text = render(&from, logs, &out, observed.other_refusals);
    if let Err(e) = std::io::Write::write_all(&mut crate::out::stdout(), text.as_bytes()) {
        eprintln!("error: cannot write to standard output: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use secureops_audit::{AuditConfig, AuditFinding, AuditLog, Kind, Via};

    use super::*;

    fn finding(kind: Kind, decision: Verdict, reason: &str, host: &str, port: Option<u16>) -> AuditFinding {
        let mut f = AuditFinding::new(kind, decision, reason).with_host(host);
        f.via = Some(if kind == Kind::Dns { Via::Dns } else { Via::Connect });
        f.port = port;
        f
    }

    /// A real log, written by the audit crate's writer: learned entries
    /// (as `run --learn` records them) are picked up beside refusals;
    /// safety and taint refusals and plain allows are not.
    #[tokio::test]
    async fn learned_and_refused_entries_from_a_real_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(AuditConfig::new(&path, dir.path().join("audit.key"))).unwrap();
        let egress = Kind::Egress;
        let learned = "learn: not in the allowlist; let through by --learn";
        let twice = finding(egress, Verdict::Allow, learned, "a.learned.test", Some(443));
        for f in [
            twice.clone(),
            twice,
            finding(
                Kind::Dns,
                Verdict::Allow,
                "learn: name let through by --learn",
                "dns.learned.test",
                None,
            ),
            finding(
                egress,
                Verdict::Deny,
                "b.refused.test:8443 is not in the egress allowlist",
                "b.refused.test",
                Some(8443),
            ),
            finding(
                Kind::Dns,
                Verdict::Deny,
                "c.refused.test is not in the egress allowlist",
                "c.refused.test",
                None,
            ),
            finding(
                egress,
                Verdict::Deny,
                "169.254.169.254 is link-local (cloud metadata); refusing",
                "169.254.169.254",
                Some(80),
            ),
            finding(
                egress,
                Verdict::Deny,
                "process 7: ~/.env was read 0.1 s ago; a tainted process may reach only taint_allowlist, not x.test:443",
                "x.test",
                Some(443),
            ),
            finding(
                egress,
                Verdict::Allow,
                "allowed by rule \"ok.test\"",
                "ok.test",
                Some(443),
            ),
        ] {
            log.append(f).await.unwrap();
        }
        log.close().await.unwrap();

        let mut observed = Observed::default();
        observed.read(&path).unwrap();
        assert_eq!(observed.other_refusals, 2);
        assert_eq!(observed.seen.len(), 4, "{:?}", observed.seen);
        let loaded = config::load(None).unwrap();
        let out = suggest(&observed.seen(), &loaded.allowlist, &|h| blocked(&loaded, h));
        let rules: Vec<(&str, u64, u64)> = out
            .proposals
            .iter()
            .map(|p| (p.rule.as_str(), p.refused, p.learned))
            .collect();
        assert_eq!(
            rules,
            [
                ("a.learned.test", 0, 2),
                ("b.refused.test:8443", 1, 0),
                ("c.refused.test", 1, 0),
                ("dns.learned.test", 0, 1),
            ]
        );
        let text = render("the built-in default", &[path], &out, observed.other_refusals);
        assert!(text.contains("  \"a.learned.test\",      # 2 learned\n"), "{text}");
        assert!(text.contains("# left out: 2 refusals"), "{text}");
        let fragment: toml::Table = text.parse().unwrap();
        assert_eq!(fragment["network"]["egress_allowlist"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn a_torn_last_line_is_skipped_other_bad_lines_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "not json\n").unwrap();
        let e = Observed::default().read(&path).unwrap_err().to_string();
        assert!(e.contains("x.jsonl:1: not an audit log entry: malformed entry"), "{e}");
        std::fs::write(&path, "{\"torn").unwrap();
        assert!(Observed::default().read(&path).is_ok());
        assert!(Observed::default().read(&dir.path().join("missing")).is_err());
    }
}
