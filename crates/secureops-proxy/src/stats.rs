//! What the enforcement point counts for metrics: decisions, refusals by
//! class, open tunnels, relayed bytes, DNS answers, PDP latency.
//!
//! Plain atomics in fixed arrays indexed by small enums, so counting on the
//! hot path is one relaxed add (no lock, no map, no allocation) and every
//! label comes from a closed set: a host name can never become a label.
//! The `secureops` binary reads them at scrape time and encodes them with
//! prometheus-client; this crate knows nothing about any metrics library.
//! Counting happens only when the guard runs with `[metrics]`
//! ([`crate::ProxyContext::stats`] is `None` otherwise).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use secureops_audit::stats::{Histogram, HistogramSnapshot, LATENCY_BUCKETS_NS};
use secureops_audit::{AuditFinding, Kind, Verdict, Via};

/// Why a connection was refused, as a metrics label: one class per kind of
/// [`crate::Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalClass {
    /// The policy denied it.
    Policy,
    /// It was escalated and not approved.
    Escalation,
    /// Not a valid host name or canonical IP literal.
    InvalidHost,
    /// The PDP failed or was too slow (fail-closed).
    PdpError,
    /// The destination resolves only to non-global addresses.
    UnsafeDestination,
    /// Not a valid proxy request.
    Malformed,
    /// No complete request head in time.
    HeaderTimeout,
    /// The allowed name did not resolve.
    Unresolvable,
    /// The allowed destination refused the connection.
    Unreachable,
    /// Connecting to the allowed destination timed out.
    ConnectTimeout,
    /// The upstream's answer was not HTTP.
    BadGateway,
    /// Over `max_connections` (also counted when shed without an answer).
    Overloaded,
    /// The audit log could not record it (fail-closed).
    AuditUnavailable,
    /// A tunnel's TLS SNI named another host.
    SniMismatch,
    /// A tunnel's ClientHello could not be read.
    UnreadableHandshake,
}

impl RefusalClass {
    /// Every class, in export order.
    pub const ALL: [RefusalClass; 15] = [
        RefusalClass::Policy,
        RefusalClass::Escalation,
        RefusalClass::InvalidHost,
        RefusalClass::PdpError,
        RefusalClass::UnsafeDestination,
        RefusalClass::Malformed,
        RefusalClass::HeaderTimeout,
        RefusalClass::Unresolvable,
        RefusalClass::Unreachable,
        RefusalClass::ConnectTimeout,
        RefusalClass::BadGateway,
        RefusalClass::Overloaded,
        RefusalClass::AuditUnavailable,
        RefusalClass::SniMismatch,
        RefusalClass::UnreadableHandshake,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalClass::Policy => "policy",
            RefusalClass::Escalation => "escalation",
            RefusalClass::InvalidHost => "invalid_host",
            RefusalClass::PdpError => "pdp_error",
            RefusalClass::UnsafeDestination => "unsafe_destination",
            RefusalClass::Malformed => "malformed",
            RefusalClass::HeaderTimeout => "header_timeout",
            RefusalClass::Unresolvable => "unresolvable",
            RefusalClass::Unreachable => "unreachable",
            RefusalClass::ConnectTimeout => "connect_timeout",
            RefusalClass::BadGateway => "bad_gateway",
            RefusalClass::Overloaded => "overloaded",
            RefusalClass::AuditUnavailable => "audit_unavailable",
            RefusalClass::SniMismatch => "sni_mismatch",
            RefusalClass::UnreadableHandshake => "unreadable_handshake",
        }
    }
}

/// What the DNS sinkhole did with a message, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsAnswer {
    /// Allowed, answered from `[dns] hosts`.
    Hosts,
    /// Allowed, answered from the cache.
    Cache,
    /// Allowed, answered by an upstream resolver.
    Upstream,
    /// Reverse lookup of a non-global address, answered locally.
    Local,
    /// Denied: the sinkhole answer (not allowed, invalid name, or an
    /// address refused by the rebinding guard).
    Sinkhole,
    /// Allowed, but no upstream answered (SERVFAIL).
    Servfail,
    /// Not a query this server answers (FORMERR, NOTIMP, REFUSED).
    Rejected,
    /// Refused while the audit log is failing (fail-closed).
    AuditUnavailable,
    /// Refused over the client's `[dns] client_rate`.
    RateLimited,
    /// Dropped unanswered (runts, responses).
    Dropped,
}

impl DnsAnswer {
    /// Every class, in export order.
    pub const ALL: [DnsAnswer; 10] = [
        DnsAnswer::Hosts,
        DnsAnswer::Cache,
        DnsAnswer::Upstream,
        DnsAnswer::Local,
        DnsAnswer::Sinkhole,
        DnsAnswer::Servfail,
        DnsAnswer::Rejected,
        DnsAnswer::AuditUnavailable,
        DnsAnswer::RateLimited,
        DnsAnswer::Dropped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsAnswer::Hosts => "hosts",
            DnsAnswer::Cache => "cache",
            DnsAnswer::Upstream => "upstream",
            DnsAnswer::Local => "local",
            DnsAnswer::Sinkhole => "sinkhole",
            DnsAnswer::Servfail => "servfail",
            DnsAnswer::Rejected => "rejected",
            DnsAnswer::AuditUnavailable => "audit_unavailable",
            DnsAnswer::RateLimited => "rate_limited",
            DnsAnswer::Dropped => "dropped",
        }
    }
}

/// Direction of relayed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream (`"up"`).
    Up,
    /// Upstream to client (`"down"`).
    Down,
}

impl Direction {
    /// Both, in export order.
    pub const ALL: [Direction; 2] = [Direction::Up, Direction::Down];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

const VERDICTS: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::Escalate];
/// `via` of egress decisions; `None` = not known (refused before a host
/// was read: malformed, timed out, overloaded).
const EGRESS_VIAS: [Option<Via>; 6] = [
    Some(Via::Connect),
    Some(Via::Http),
    Some(Via::Sni),
    Some(Via::HostHeader),
    Some(Via::Ip),
    None,
];
/// Decision slots: egress (3 verdicts × 6 vias), then dns (3 verdicts).
const DECISION_SLOTS: usize = VERDICTS.len() * EGRESS_VIAS.len() + VERDICTS.len();

/// One decision series: `(kind, decision, via)` and its count; `via` is
/// `"none"` when the host was never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionCount {
    /// `egress` or `dns`.
    pub kind: &'static str,
    /// `allow`, `deny` or `escalate`.
    pub decision: &'static str,
    /// How the host was learnt, or `none`.
    pub via: &'static str,
    /// Decisions so far.
    pub count: u64,
}

/// The enforcement point's counters (see the module docs). Shared by the
/// proxy listeners and the DNS sinkhole of one guard.
#[derive(Debug)]
pub struct ProxyStats {
    decisions: [AtomicU64; DECISION_SLOTS],
    refusals: [AtomicU64; RefusalClass::ALL.len()],
    tunnels: AtomicI64,
    relayed: [AtomicU64; 2],
    dns: [AtomicU64; DnsAnswer::ALL.len()],
    pdp: Histogram,
}

impl Default for ProxyStats {
    fn default() -> Self {
        ProxyStats {
            decisions: std::array::from_fn(|_| AtomicU64::new(0)),
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            tunnels: AtomicI64::new(0),
            relayed: std::array::from_fn(|_| AtomicU64::new(0)),
            dns: std::array::from_fn(|_| AtomicU64::new(0)),
            pdp: Histogram::seconds(LATENCY_BUCKETS_NS),
        }
    }
}

fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::Escalate => 2,
    }
}

fn decision_slot(kind: Kind, verdict: Verdict, via: Option<Via>) -> usize {
    match kind {
        Kind::Egress => {
            // A `dns` via on an egress entry does not happen; it would
            // count as unknown.
            let v = EGRESS_VIAS
                .iter()
                .position(|&x| x == via)
                .unwrap_or(EGRESS_VIAS.len() - 1);
            verdict_index(verdict) * EGRESS_VIAS.len() + v
        }
        Kind::Dns => VERDICTS.len() * EGRESS_VIAS.len() + verdict_index(verdict),
    }
}

/// Each label with its counter's value.
fn labelled<T: Copy>(labels: &[T], counters: &[AtomicU64]) -> Vec<(T, u64)> {
    labels
        .iter()
        .zip(counters)
        .map(|(&l, n)| (l, n.load(Ordering::Relaxed)))
        .collect()
}

fn add(counter: Option<&AtomicU64>, n: u64) {
    if let Some(c) = counter {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl ProxyStats {
    /// One decision, as its audit entry records it.
    pub fn decision(&self, f: &AuditFinding) {
        add(self.decisions.get(decision_slot(f.kind, f.decision, f.via)), 1);
    }

    /// One refusal of this class.
    pub fn refusal(&self, class: RefusalClass) {
        let i = RefusalClass::ALL.iter().position(|&c| c == class);
        add(i.and_then(|i| self.refusals.get(i)), 1);
    }

    /// One DNS message handled this way.
    pub fn dns(&self, answer: DnsAnswer) {
        let i = DnsAnswer::ALL.iter().position(|&a| a == answer);
        add(i.and_then(|i| self.dns.get(i)), 1);
    }

    /// `n` bytes relayed in `direction`.
    pub fn relayed(&self, direction: Direction, n: u64) {
        let i = match direction {
            Direction::Up => 0,
            Direction::Down => 1,
        };
        add(self.relayed.get(i), n);
    }

    /// One PDP call took `d`.
    pub fn pdp(&self, d: Duration) {
        self.pdp.observe_duration(d);
    }

    /// A tunnel is relaying until the returned guard is dropped.
    pub fn tunnel(&self) -> TunnelGuard<'_> {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelGuard(self)
    }

    /// Every decision series (egress: each decision × via; dns: each
    /// decision), zeros included.
    pub fn decisions(&self) -> Vec<DecisionCount> {
        let mut out = Vec::with_capacity(DECISION_SLOTS);
        for verdict in VERDICTS {
            for via in EGRESS_VIAS {
                out.push(DecisionCount {
                    kind: "egress",
                    decision: verdict.as_str(),
                    via: via.map_or("none", Via::as_str),
                    count: self.load_decision(Kind::Egress, verdict, via),
                });
            }
        }
        for verdict in VERDICTS {
            out.push(DecisionCount {
                kind: "dns",
                decision: verdict.as_str(),
                via: Via::Dns.as_str(),
                count: self.load_decision(Kind::Dns, verdict, Some(Via::Dns)),
            });
        }
        out
    }

    fn load_decision(&self, kind: Kind, verdict: Verdict, via: Option<Via>) -> u64 {
        self.decisions
            .get(decision_slot(kind, verdict, via))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Refusals per class, zeros included.
    pub fn refusals(&self) -> Vec<(RefusalClass, u64)> {
        labelled(&RefusalClass::ALL, &self.refusals)
    }

    /// DNS messages per answer class, zeros included.
    pub fn dns_answers(&self) -> Vec<(DnsAnswer, u64)> {
        labelled(&DnsAnswer::ALL, &self.dns)
    }

    /// Bytes relayed per direction.
    pub fn relayed_bytes(&self) -> Vec<(Direction, u64)> {
        labelled(&Direction::ALL, &self.relayed)
    }

    /// Tunnels relaying now.
    pub fn tunnels_active(&self) -> i64 {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// PDP latency, in seconds.
    pub fn pdp_seconds(&self) -> HistogramSnapshot {
        self.pdp.snapshot()
    }
}

/// Counts one open tunnel while it lives (see [`ProxyStats::tunnel`]).
#[derive(Debug)]
pub struct TunnelGuard<'a>(&'a ProxyStats);

impl Drop for TunnelGuard<'_> {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_is_distinct_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for verdict in VERDICTS {
            for via in EGRESS_VIAS {
                assert!(seen.insert(decision_slot(Kind::Egress, verdict, via)));
            }
            assert!(seen.insert(decision_slot(Kind::Dns, verdict, Some(Via::Dns))));
        }
        assert!(seen.iter().all(|&i| i < DECISION_SLOTS));
        assert_eq!(seen.len(), DECISION_SLOTS);
    }

    #[test]
    fn counts_land_in_their_series() {
        let s = ProxyStats::default();
        s.decision(&AuditFinding::new(Kind::Egress, Verdict::Deny, "x").with_via(Via::Connect));
        s.decision(&AuditFinding::new(Kind::Egress, Verdict::Deny, "x"));
        s.decision(&AuditFinding::new(Kind::Dns, Verdict::Allow, "x").with_via(Via::Dns));
        let d = s.decisions();
        let get = |k, dec, via| {
            d.iter()
                .find(|c| c.kind == k && c.decision == dec && c.via == via)
                .map(|c| c.count)
        };
        assert_eq!(get("egress", "deny", "connect"), Some(1));
        assert_eq!(get("egress", "deny", "none"), Some(1));
        assert_eq!(get("dns", "allow", "dns"), Some(1));
        assert_eq!(d.iter().map(|c| c.count).sum::<u64>(), 3);
        {
            let _t = s.tunnel();
            assert_eq!(s.tunnels_active(), 1);
        }
        assert_eq!(s.tunnels_active(), 0);
    }
}
