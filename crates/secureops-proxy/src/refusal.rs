//! Every way a connection can be refused, and the one place that decides
//! which status, audit verdict and reason each one gets (in the manner of
//! linkerd's `errors/respond.rs`: handlers return a `Refusal`, they do not
//! pick status codes).

use secureops_audit::Verdict;
use secureops_policy::{HostError, UnsafeDestination};

use crate::decision::{Decision, PdpError, Ruling};
use crate::stats::RefusalClass;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The policy said deny, or escalation was not approved.
    #[error("{}", .0.reason)]
    Policy(Ruling),
    /// The destination is not a valid host name or canonical IP literal.
    #[error("invalid host {host:?}: {error}")]
    InvalidHost {
        /// The host as sent.
        host: String,
        /// What is wrong with it.
        error: HostError,
    },
    /// The PDP failed; fail-closed.
    #[error("{0}; refusing (fail-closed)")]
    Pdp(PdpError),
    /// The destination resolves only to addresses that are not globally
    /// reachable.
    #[error("{0}")]
    Unsafe(UnsafeDestination),
    /// The client sent something that is not a valid proxy request.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The client did not send a complete request head in time.
    #[error("request head not received within {0} ms")]
    HeaderTimeout(u64),
    /// The allowed destination could not be resolved.
    #[error("cannot resolve {0}")]
    Unresolvable(String),
    /// The allowed destination refused or failed the connection.
    #[error("cannot connect to {0}")]
    Unreachable(String),
    /// Connecting to the allowed destination timed out.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// The upstream's answer was not valid HTTP.
    #[error("bad response from upstream: {0}")]
    BadGateway(String),
    /// More than `max_connections` connections are open.
    #[error("too many connections (max_connections = {0})")]
    Overloaded(usize),
    /// The audit log cannot be written; nothing is let through unrecorded.
    #[error("audit log unavailable; refusing (fail-closed)")]
    AuditUnavailable,
    /// Inside a CONNECT tunnel, the TLS SNI named another host.
    #[error("TLS SNI {sni:?} does not match CONNECT host {host:?} (domain fronting)")]
    SniMismatch {
        /// The SNI sent.
        sni: String,
        /// The CONNECT host.
        host: String,
    },
    /// Inside a CONNECT tunnel, the TLS handshake could not be read.
    #[error("unreadable TLS ClientHello in tunnel: {0}")]
    UnreadableHandshake(String),
}

impl Refusal {
    /// The HTTP status the explicit listener answers with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Policy(_)
            | Refusal::InvalidHost { .. }
            | Refusal::Pdp(_)
            | Refusal::Unsafe(_)
            | Refusal::SniMismatch { .. }
            | Refusal::UnreadableHandshake(_) => 403,
            Refusal::Malformed(_) => 400,
            Refusal::HeaderTimeout(_) => 408,
            Refusal::Unresolvable(_) | Refusal::Unreachable(_) | Refusal::BadGateway(_) => 502,
            Refusal::ConnectTimeout(_) => 504,
            Refusal::Overloaded(_) | Refusal::AuditUnavailable => 503,
        }
    }

    /// The metrics class of this refusal (a fixed set: never the host).
    pub fn class(&self) -> RefusalClass {
        match self {
            Refusal::Policy(r) if r.decision == Decision::Escalate => RefusalClass::Escalation,
            Refusal::Policy(_) => RefusalClass::Policy,
            Refusal::InvalidHost { .. } => RefusalClass::InvalidHost,
            Refusal::Pdp(_) => RefusalClass::PdpError,
            Refusal::Unsafe(_) => RefusalClass::UnsafeDestination,
            Refusal::Malformed(_) => RefusalClass::Malformed,
            Refusal::HeaderTimeout(_) => RefusalClass::HeaderTimeout,
            Refusal::Unresolvable(_) => RefusalClass::Unresolvable,
            Refusal::Unreachable(_) => RefusalClass::Unreachable,
            Refusal::ConnectTimeout(_) => RefusalClass::ConnectTimeout,
            Refusal::BadGateway(_) => RefusalClass::BadGateway,
            Refusal::Overloaded(_) => RefusalClass::Overloaded,
            Refusal::AuditUnavailable => RefusalClass::AuditUnavailable,
            Refusal::SniMismatch { .. } => RefusalClass::SniMismatch,
            Refusal::UnreadableHandshake(_) => RefusalClass::UnreadableHandshake,
        }
    }

    /// The decision recorded in the audit log: escalations that were not
    /// approved stay `escalate`, everything else is a `deny`.
    pub fn verdict(&self) -> Verdict {
        match self {
            Refusal::Policy(r) if r.decision == Decision::Escalate => Verdict::Escalate,
            _ => Verdict::Deny,
        }
    }

    /// The complete HTTP/1.1 response for this refusal: status, a one-line
    /// reason in the body, and `Connection: close`.
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let body = format!("secureops: {}\n", one_line(&self.to_string()));
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Secureops-Decision: {}\r\n\r\n{body}",
            reason_phrase(status),
            body.len(),
            verdict_word(self.verdict()),
        )
        .into_bytes()
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Escalate => "escalate",
    }
}

/// Replaces control characters so a reason built from client input can
/// never split the response or the log line.
pub(crate) fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_is_one_line_with_status() {
        let r = Refusal::Malformed("bad\r\nX-Injected: 1".into());
        let text = String::from_utf8(r.response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body.lines().count(), 1);
        assert!(!text.contains("\r\nX-Injected"));
    }

    #[test]
    fn escalation_stays_escalate() {
        let r = Refusal::Policy(Ruling {
            decision: Decision::Escalate,
            reason: "ask".into(),
        });
        assert_eq!(r.verdict(), Verdict::Escalate);
        assert_eq!(r.status(), 403);
    }
}
