//! What a run refused and what `--learn` let through, told on stderr when
//! the run ends (PRODUCT.md "Confinement under `run`", "Policy authoring").
//!
//! The decisions are collected in memory, as the audit log accepts them
//! (an [`AuditObserver`] on the run's log): the summary then says exactly
//! what the log holds for this run, without reading back a log that may
//! hold earlier runs, may have rotated meanwhile or may be large. Memory
//! is bounded ([`MAX_DESTINATIONS`] per list); attempts beyond it are
//! counted, not itemised.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use secureops_audit::{AuditFinding, AuditObserver, Kind, Verdict};
use secureops_policy::Mode;
use secureops_policy::learn::{LEARN_PREFIX, NOT_LISTED};

/// Destinations kept per list; a run that tries more (random DNS names,
/// a scan) has the rest counted as "more".
const MAX_DESTINATIONS: usize = 10_000;

/// Destination lines shown, both lists together (the rest: "and N more").
const SHOWN: usize = 16;

/// Widest reason shown; the audit log has the whole text.
const REASON_WIDTH: usize = 72;

/// One destination (a host: DNS name or IP literal) and what happened to it.
#[derive(Debug, Default)]
struct Dest {
    attempts: u64,
    /// DNS queries for the name.
    dns: u64,
    /// Connections by port.
    ports: BTreeMap<u16, u64>,
    /// Refused for want of a rule: a rule would let these through.
    unlisted: u64,
    /// The first other reason it was refused for.
    other: Option<String>,
}

/// Destinations of one kind (refused, or learned).
#[derive(Debug, Default)]
struct List {
    dests: HashMap<String, Dest>,
    /// Attempts to destinations beyond [`MAX_DESTINATIONS`].
    untracked: u64,
}

impl List {
    fn add(&mut self, host: &str, port: Option<u16>, reason: &str) {
        if !self.dests.contains_key(host) && self.dests.len() >= MAX_DESTINATIONS {
            self.untracked += 1;
            return;
        }
        let d = self.dests.entry(host.to_owned()).or_default();
        d.attempts += 1;
        match port {
            Some(port) => *d.ports.entry(port).or_default() += 1,
            None => d.dns += 1,
        }
        if reason.contains(NOT_LISTED) {
            d.unlisted += 1;
        } else if d.other.is_none() {
            d.other = Some(reason.to_owned());
        }
    }

    fn attempts(&self) -> u64 {
        self.dests.values().map(|d| d.attempts).sum::<u64>() + self.untracked
    }

    /// Most attempts first, then by name.
    fn sorted(&self) -> Vec<(&String, &Dest)> {
        let mut v: Vec<_> = self.dests.iter().collect();
        v.sort_by(|a, b| b.1.attempts.cmp(&a.1.attempts).then_with(|| a.0.cmp(b.0)));
        v
    }
}

/// The decisions of one run, by destination: those refused, and those let
/// through only by `--learn`.
#[derive(Debug, Default)]
pub struct Tally {
    lists: Mutex<(List, List)>,
}

impl AuditObserver for Tally {
    fn recorded(&self, f: &AuditFinding) {
        // Entries without a destination (malformed requests, DNS flood
        // summaries) name nothing a rule could change.
        let Some(host) = f.host.as_deref() else { return };
        let port = match f.kind {
            Kind::Dns => None,
            Kind::Egress => f.port,
        };
        let Ok(mut lists) = self.lists.lock() else { return };
        match f.decision {
            Verdict::Deny | Verdict::Escalate if f.reason.starts_with(LEARN_PREFIX) => {
                // Let through by --learn, then refused (a DNS upstream
                // failed): the why follows the learn clause, and no rule
                // is missing.
                let learned = Mode::Learn.unlisted(host).unwrap_or_default();
                let why = f.reason.strip_prefix(learned.as_str()).unwrap_or(&f.reason);
                lists.0.add(host, port, why.trim_start_matches("; "));
            }
            Verdict::Deny | Verdict::Escalate => lists.0.add(host, port, &f.reason),
            Verdict::Allow if f.reason.starts_with(LEARN_PREFIX) => lists.1.add(host, port, &f.reason),
            Verdict::Allow => {}
        }
    }
}

impl Tally {
    /// The summary's lines (none when nothing was refused or learned);
    /// `log` is named for the details.
    pub fn render(&self, log: &Path) -> Vec<String> {
        let Ok(lists) = self.lists.lock() else {
            return Vec::new();
        };
        let (refused, learned) = (&lists.0, &lists.1);
        // Learned ones take what the refused ones leave, and at least half.
        let learned_shown = learned.dests.len().min(SHOWN - refused.dests.len().min(SHOWN / 2));
        let refused_shown = refused.dests.len().min(SHOWN - learned_shown);
        let mut out = Vec::new();
        if refused.attempts() > 0 {
            out.push(format!(
                "secureops: refused {} during this run (details: secureops audit show {} --decision deny):",
                counted(refused.attempts(), refused.dests.len()),
                log.display()
            ));
            section(&mut out, refused, refused_shown, Section::Refused, log);
        }
        if learned.attempts() > 0 {
            out.push(format!(
                "secureops: learned {} (not in the allowlist; let through by --learn):",
                counted(learned.attempts(), learned.dests.len())
            ));
            section(&mut out, learned, learned_shown, Section::Learned { refused }, log);
        }
        out
    }
}

/// "3 attempts to 2 destinations".
fn counted(attempts: u64, dests: usize) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{} to {}",
        plural(attempts, "attempt", "attempts"),
        plural(dests as u64, "destination", "destinations")
    )
}

/// Which list a section shows.
#[derive(Clone, Copy)]
enum Section<'a> {
    /// What was refused.
    Refused,
    /// What `--learn` let through; `refused` is the other list.
    Learned { refused: &'a List },
}

/// The lines of one list: the `shown` most tried destinations, "and N
/// more", then the `--allow` flags for them.
fn section(out: &mut Vec<String>, list: &List, shown: usize, which: Section<'_>, log: &Path) {
    let refused = matches!(which, Section::Refused);
    let sorted = list.sorted();
    let width = sorted
        .iter()
        .take(shown)
        .map(|(h, _)| printable(h).len())
        .max()
        .unwrap_or(0)
        .min(40);
    let tried: Vec<String> = sorted.iter().take(shown).map(|(_, d)| tries(d)).collect();
    let tried_width = tried.iter().map(String::len).max().unwrap_or(0);
    let mut rules: Vec<String> = Vec::new();
    for ((host, d), tried) in sorted.iter().take(shown).zip(&tried) {
        let mut line = format!(
            "  {:<width$}  {:>5}  {tried:<tried_width$}",
            printable(host),
            d.attempts
        );
        if refused {
            line.push_str("  ");
            line.push_str(&shorten(&match (&d.other, d.unlisted) {
                (Some(other), 0) => printable(other),
                (Some(other), _) => format!("not in the allowlist; also: {}", printable(other)),
                (None, _) => "not in the allowlist".to_owned(),
            }));
        }
        // A name learned but also refused for its address (an unsafe
        // answer, a metadata name's AAAA query let through) gets no rule.
        let unsafe_too = match which {
            Section::Learned { refused } => refused.dests.get(*host).is_some_and(|r| r.other.is_some()),
            Section::Refused => false,
        };
        if unsafe_too {
            line.push_str("  (also refused, above: no rule)");
        }
        out.push(line.trim_end().to_owned());
        // A rule helps only where the policy refused for want of one
        // (not an unsafe address, a taint or a failed upstream).
        let helps = match which {
            Section::Refused => d.unlisted > 0,
            Section::Learned { .. } => !unsafe_too,
        };
        if helps {
            for rule in rules_for(host, d) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    let hidden = sorted.len().saturating_sub(shown);
    let hidden_attempts: u64 = sorted.iter().skip(shown).map(|(_, d)| d.attempts).sum::<u64>() + list.untracked;
    if hidden_attempts > 0 {
        let more = if list.untracked > 0 {
            format!("{hidden}+")
        } else {
            hidden.to_string()
        };
        out.push(format!(
            "  and {more} more ({hidden_attempts} attempts): secureops policy suggest {}",
            log.display()
        ));
    }
    if !rules.is_empty() {
        let flags: Vec<String> = rules.iter().map(|r| format!("--allow {}", shell_word(r))).collect();
        out.push(format!(
            "secureops: {}: {}",
            if refused {
                "to let them through"
            } else {
                "to allow them without --learn"
            },
            flags.join(" ")
        ));
    }
}

/// "dns 2, :443 3".
fn tries(d: &Dest) -> String {
    let mut parts = Vec::new();
    if d.dns > 0 {
        parts.push(format!("dns {}", d.dns));
    }
    parts.extend(d.ports.iter().map(|(p, n)| format!(":{p} {n}")));
    parts.join(", ")
}

/// The rules that would let `d`'s attempts through: one per port that
/// needs its own, or the bare host when only DNS was seen.
fn rules_for(host: &str, d: &Dest) -> Vec<String> {
    let ports: Vec<u16> = if d.ports.is_empty() {
        vec![443]
    } else {
        d.ports.keys().copied().collect()
    };
    // Only a destination a rule can name (never an invalid host as sent).
    if secureops_policy::normalize_host(host).map(|h| h.to_string()).as_deref() != Ok(host) {
        return Vec::new();
    }
    let mut rules = Vec::new();
    for port in ports {
        let rule = suggested_rule(host, port);
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    rules
}

/// The rule proposed for one destination: the preset `@NAME` that covers
/// it, else `host` (a name rule covers ports 80 and 443 and lets the name
/// resolve) or `host:port`.
fn suggested_rule(host: &str, port: u16) -> String {
    // A preset names the whole ecosystem a tool needs (pip also wants
    // files.pythonhosted.org), so it beats one host when it covers this one.
    if let Some(preset) = secureops_policy::presets::covering(host, port) {
        return format!("@{preset}");
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port {
        80 | 443 => host,
        port => format!("{host}:{port}"),
    }
}

/// `word`, quoted for a POSIX shell when it holds anything but plain
/// host characters (an IPv6 literal's brackets).
fn shell_word(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '@'))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Text from the network (a host as sent, a reason quoting it) made safe
/// for a terminal: anything but printable ASCII is escaped.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c.to_string()
            } else {
                c.escape_default().to_string()
            }
        })
        .collect()
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= REASON_WIDTH {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(REASON_WIDTH - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use secureops_audit::Via;

    use super::*;

    fn egress(decision: Verdict, host: &str, port: u16, reason: &str) -> AuditFinding {
        AuditFinding::new(Kind::Egress, decision, reason)
            .with_host(host)
            .with_port(port)
            .with_via(Via::Sni)
    }

    fn dns(decision: Verdict, host: &str, reason: &str) -> AuditFinding {
        AuditFinding::new(Kind::Dns, decision, reason)
            .with_host(host)
            .with_via(Via::Dns)
    }

    #[test]
    fn a_name_refused_by_dns_and_by_the_proxy_is_one_line_with_its_rules() {
        let t = Tally::default();
        for _ in 0..2 {
            t.recorded(&dns(
                Verdict::Deny,
                "evil.test",
                "evil.test is not in the egress allowlist",
            ));
        }
        t.recorded(&egress(
            Verdict::Deny,
            "evil.test",
            443,
            "evil.test:443 is not in the egress allowlist",
        ));
        t.recorded(&egress(
            Verdict::Deny,
            "evil.test",
            8443,
            "evil.test:8443 is not in the egress allowlist",
        ));
        t.recorded(&egress(
            Verdict::Deny,
            "127.0.0.1",
            80,
            "127.0.0.1 is in the loopback range, not globally reachable (list it in [network] private_destinations to allow)",
        ));
        t.recorded(&egress(Verdict::Allow, "ok.test", 443, "allowed by rule \"ok.test\""));
        t.recorded(&AuditFinding::new(Kind::Egress, Verdict::Deny, "malformed request: x"));
        let lines = t.render(Path::new("/l.jsonl"));
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].contains("refused 5 attempts to 2 destinations"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("evil.test") && lines[1].contains("4  dns 2, :443 1, :8443 1"));
        assert!(lines[1].ends_with("not in the allowlist"), "{}", lines[1]);
        assert!(
            lines[2].contains("127.0.0.1") && lines[2].contains("loopback"),
            "{}",
            lines[2]
        );
        // No rule lifts destination safety: only evil.test gets flags.
        assert_eq!(
            lines[3],
            "secureops: to let them through: --allow evil.test --allow evil.test:8443"
        );
    }

    #[test]
    fn a_host_of_a_preset_is_offered_as_the_preset() {
        let t = Tally::default();
        t.recorded(&egress(
            Verdict::Deny,
            "files.pythonhosted.org",
            443,
            "files.pythonhosted.org:443 is not in the egress allowlist",
        ));
        let lines = t.render(Path::new("/l.jsonl"));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("secureops: to let them through: --allow @pypi"),
            "{lines:#?}"
        );
    }

    #[test]
    fn nothing_refused_or_learned_says_nothing() {
        let t = Tally::default();
        t.recorded(&egress(Verdict::Allow, "ok.test", 443, "allowed by rule \"ok.test\""));
        assert!(t.render(Path::new("/l")).is_empty());
    }

    #[test]
    fn learned_destinations_are_listed_apart_with_their_rules() {
        let t = Tally::default();
        t.recorded(&dns(
            Verdict::Allow,
            "new.test",
            "learn: new.test is not in the egress allowlist; let through by --learn; answered by upstream 1.1.1.1:53",
        ));
        t.recorded(&egress(
            Verdict::Allow,
            "new.test",
            443,
            "learn: new.test:443 is not in the egress allowlist; let through by --learn",
        ));
        t.recorded(&egress(
            Verdict::Allow,
            "2001:db8::1",
            22,
            "learn: [2001:db8::1]:22 is not in the egress allowlist; let through by --learn",
        ));
        let lines = t.render(Path::new("/l"));
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("secureops: learned 3 attempts to 2 destinations"));
        assert!(lines[1].contains("new.test") && lines[1].contains("dns 1, :443 1"));
        assert_eq!(
            lines[3],
            "secureops: to allow them without --learn: --allow new.test --allow '[2001:db8::1]:22'"
        );
    }

    #[test]
    fn a_learned_name_whose_lookup_failed_is_refused_for_that_not_for_a_missing_rule() {
        let t = Tally::default();
        let learned = Mode::Learn.unlisted("gone.test").unwrap_or_default();
        t.recorded(&dns(
            Verdict::Deny,
            "gone.test",
            &format!("{learned}; cannot resolve: upstream timed out"),
        ));
        let lines = t.render(Path::new("/l"));
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[1].ends_with("dns 1  cannot resolve: upstream timed out"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn a_name_learned_but_also_refused_for_its_address_gets_no_rule() {
        let t = Tally::default();
        t.recorded(&dns(
            Verdict::Allow,
            "metadata.test",
            "learn: metadata.test is not in the egress allowlist; let through by --learn; answered from [dns] hosts",
        ));
        t.recorded(&dns(
            Verdict::Deny,
            "metadata.test",
            "[dns] hosts answer refused: 169.254.169.254 is in the link-local (cloud metadata) range",
        ));
        let lines = t.render(Path::new("/l"));
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[3].ends_with("(also refused, above: no rule)"), "{}", lines[3]);
        assert!(lines.iter().all(|l| !l.contains("--allow")), "{lines:#?}");
    }

    #[test]
    fn long_lists_stop_at_the_budget_and_say_how_many_more() {
        let t = Tally::default();
        for i in 0..40u64 {
            for _ in 0..=i {
                t.recorded(&dns(
                    Verdict::Deny,
                    &format!("h{i:02}.test"),
                    &format!("h{i:02}.test {NOT_LISTED}"),
                ));
            }
        }
        let lines = t.render(Path::new("/l"));
        assert_eq!(lines.len(), 1 + SHOWN + 2, "{lines:#?}");
        // Most tried first.
        assert!(lines[1].contains("h39.test"), "{}", lines[1]);
        let hidden: u64 = (1..=24).sum();
        assert!(
            lines[SHOWN + 1].contains(&format!("and 24 more ({hidden} attempts)")),
            "{}",
            lines[SHOWN + 1]
        );
        assert_eq!(lines[SHOWN + 2].matches("--allow").count(), SHOWN);
    }

    #[test]
    fn hosts_from_the_network_cannot_reach_the_terminal_raw() {
        let t = Tally::default();
        t.recorded(&egress(
            Verdict::Deny,
            "a\u{1b}[2Jb\u{202e}",
            443,
            "invalid host \"a\u{1b}[2Jb\": bad",
        ));
        let lines = t.render(Path::new("/l"));
        assert!(
            lines.iter().all(|l| !l.contains('\u{1b}') && !l.contains('\u{202e}')),
            "{lines:?}"
        );
        // An invalid host gets no --allow flag.
        assert!(lines.iter().all(|l| !l.contains("--allow")), "{lines:?}");
    }

    #[test]
    fn memory_is_bounded_and_the_rest_is_counted() {
        let t = Tally::default();
        for i in 0..(MAX_DESTINATIONS + 5) {
            t.recorded(&dns(Verdict::Deny, &format!("x{i}.test"), NOT_LISTED));
        }
        let lines = t.render(Path::new("/l"));
        let more = lines.iter().find(|l| l.contains("more (")).unwrap();
        assert!(
            more.contains(&format!("and {}+ more", MAX_DESTINATIONS - SHOWN)),
            "{more}"
        );
    }
}
