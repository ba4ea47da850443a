//! What the enforcement point reports: one decision, before it is chained.

use serde::{Deserialize, Serialize};

/// What kind of decision a finding records.
///
/// `start` and `stop` entries are written by the log itself and have no
/// `Kind` (see [`crate::EntryKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An outbound connection or HTTP request.
    Egress,
    /// A DNS query answered (or sinkholed) by the DNS sinkhole.
    Dns,
}

/// The decision taken. Serialises as `"allow"`, `"deny"`, `"escalate"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The connection or query was let through.
    Allow,
    /// The connection or query was refused.
    Deny,
    /// A person was (or is being) asked.
    Escalate,
}

impl Verdict {
    /// The word used in the log (`allow`, `deny`, `escalate`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Escalate => "escalate",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the destination host was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The CONNECT request line (`"connect"`).
    Connect,
    /// An absolute-form HTTP request (`"http"`).
    Http,
    /// The TLS ClientHello SNI (`"sni"`).
    Sni,
    /// The HTTP `Host` header of a transparently redirected connection (`"host-header"`).
    HostHeader,
    /// Only the destination IP was known (`"ip"`).
    Ip,
    /// A DNS question (`"dns"`).
    Dns,
}

impl Via {
    /// The word used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Connect => "connect",
            Via::Http => "http",
            Via::Sni => "sni",
            Via::HostHeader => "host-header",
            Via::Ip => "ip",
            Via::Dns => "dns",
        }
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision, as reported by the enforcement point.
///
/// Build it with [`AuditFinding::new`] and the `with_*` methods, or fill the
/// public fields directly. Strings are written as given (JSON-escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFinding {
    /// Egress connection or DNS query.
    pub kind: Kind,
    /// What was decided.
    pub decision: Verdict,
    /// One-line human reason (the same text the client is shown).
    pub reason: String,
    /// Destination host name or IP literal, when known.
    pub host: Option<String>,
    /// Destination port, when known.
    pub port: Option<u16>,
    /// How the host was learnt.
    pub via: Option<Via>,
    /// PID of the process that asked, when attributed.
    pub pid: Option<u32>,
    /// Executable of that process, when attributed.
    pub exe: Option<String>,
    /// HTTP status code the client got, if the proxy answered with one.
    pub status: Option<u16>,
    /// DNS query type (`A`, `AAAA`, …) for DNS findings.
    pub qtype: Option<String>,
    /// Free-form extra detail (e.g. the matching rule).
    pub detail: Option<String>,
}

impl AuditFinding {
    /// A finding with only the mandatory parts; all optional fields empty.
    pub fn new(kind: Kind, decision: Verdict, reason: impl Into<String>) -> Self {
        AuditFinding {
            kind,
            decision,
            reason: reason.into(),
            host: None,
            port: None,
            via: None,
            pid: None,
            exe: None,
            status: None,
            qtype: None,
            detail: None,
        }
    }

    /// Sets the destination host.
    #[must_use]
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Sets the destination port.
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets how the host was learnt.
    #[must_use]
    pub fn with_via(mut self, via: Via) -> Self {
        self.via = Some(via);
        self
    }

    /// Sets the attributed process (either part may be unknown).
    #[must_use]
    pub fn with_process(mut self, pid: Option<u32>, exe: Option<String>) -> Self {
        self.pid = pid;
        self.exe = exe;
        self
    }

    /// Sets the HTTP status code the client got.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the DNS query type.
    #[must_use]
    pub fn with_qtype(mut self, qtype: impl Into<String>) -> Self {
        self.qtype = Some(qtype.into());
        self
    }

    /// Sets the free-form detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}
