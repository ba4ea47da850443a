//! `secureops audit show FILE --summary`: one line per destination
//! (`host:port`; a DNS name as `host`) with its counts per decision, most
//! frequent first.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::audit_cmd::decision_word;
use crate::cli::DecisionFilter;

/// Counts of one destination: allow, deny, escalate.
#[derive(Debug, Default, Clone, Copy)]
struct Counts([u64; 3]);

impl Counts {
    fn total(self) -> u64 {
        self.0.iter().sum()
    }
}

/// The destination of a parsed entry, as the summary names it; `None` for
/// the log's own entries (`start`, `stop`).
fn destination(v: &serde_json::Value) -> Option<String> {
    let kind = v.get("kind").and_then(serde_json::Value::as_str)?;
    if kind != "egress" && kind != "dns" {
        return None;
    }
    let host = v.get("host").and_then(serde_json::Value::as_str);
    let port = v.get("port").and_then(serde_json::Value::as_u64);
    Some(match (host, port) {
        (None, _) => "(no destination)".to_owned(),
        (Some(h), Some(p)) if kind == "egress" && h.contains(':') => format!("[{h}]:{p}"),
        (Some(h), Some(p)) if kind == "egress" => format!("{h}:{p}"),
        (Some(h), _) => h.to_owned(),
    })
}

/// Reads `file` and prints the summary (entries with `decision` only, when given).
pub fn summary(file: &Path, decision: Option<DecisionFilter>) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let want = decision.map(decision_word);
    let mut by_dest: HashMap<String, Counts> = HashMap::new();
    for line in std::io::BufReader::new(f).split(b'\n') {
        let line = line?;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(dest) = destination(&v) else { continue };
        let word = v.get("decision").and_then(serde_json::Value::as_str).unwrap_or("");
        if want.is_some_and(|w| w != word) {
            continue;
        }
        let slot = match word {
            "allow" => 0,
            "deny" => 1,
            "escalate" => 2,
            _ => continue,
        };
        by_dest.entry(dest).or_default().0[slot] += 1;
    }
    let mut rows: Vec<(String, Counts)> = by_dest.into_iter().collect();
    rows.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(&b.0)));
    let mut out = crate::out::stdout();
    writeln!(
        out,
        "{:<40} {:>7} {:>7} {:>7} {:>8}",
        "DESTINATION", "TOTAL", "ALLOW", "DENY", "ESCALATE"
    )?;
    for (dest, c) in rows {
        // Names come from the network (DNS names as sent): nothing in them
        // may drive the terminal.
        let dest: String = dest.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
        let [allow, deny, escalate] = c.0;
        writeln!(out, "{dest:<40} {:>7} {allow:>7} {deny:>7} {escalate:>8}", c.total())?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_name_ports_for_connections_and_not_for_dns() {
        let d = |s: &str| destination(&serde_json::from_str(s).unwrap_or_default());
        assert_eq!(
            d(r#"{"kind":"egress","host":"a.test","port":443}"#).as_deref(),
            Some("a.test:443")
        );
        assert_eq!(
            d(r#"{"kind":"egress","host":"2001:db8::1","port":22}"#).as_deref(),
            Some("[2001:db8::1]:22")
        );
        assert_eq!(
            d(r#"{"kind":"dns","host":"a.test","port":null}"#).as_deref(),
            Some("a.test")
        );
        assert_eq!(d(r#"{"kind":"start","host":null}"#), None);
        assert_eq!(
            d(r#"{"kind":"egress","host":null,"port":null}"#).as_deref(),
            Some("(no destination)")
        );
    }
}
