//! The policy decision point as the enforcement point sees it.

use std::net::SocketAddr;

use secureops_audit::Via;
use secureops_policy::{Allowlist, Host, Mode};

/// The PDP's verdict for a single egress attempt (PRODUCT.md B.5 step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Let the connection through.
    Allow,
    /// Refuse it.
    Deny,
    /// Hold it and ask a person; without an answer it is refused.
    Escalate,
}

impl Decision {
    /// The lower-case word used on the CLI and in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Escalate => "escalate",
        }
    }
}

/// A decision with the human reason that goes into the refusal body and the
/// audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    /// The verdict.
    pub decision: Decision,
    /// One line saying why (names the rule that allowed, or what is missing).
    pub reason: String,
}

/// The per-connection context handed to the PDP: who is asking, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRequest {
    /// The normalised destination host.
    pub host: Host,
    /// Destination port.
    pub port: u16,
    /// Where the host was learned.
    pub via: Via,
    /// The client's socket address.
    pub peer: Option<SocketAddr>,
    /// The client's process id, when attribution succeeded.
    pub pid: Option<u32>,
    /// The client's executable, when attribution succeeded.
    pub exe: Option<String>,
    /// More about the client process (uid, parent, binary hash, command
    /// line), recorded in the audit entry's `detail`.
    pub process_detail: Option<String>,
}

impl ConnectionRequest {
    /// The same request, attributed to `process`.
    pub fn with_process(mut self, process: crate::attribution::Process) -> Self {
        self.pid = process.pid;
        self.exe = process.exe;
        self.process_detail = process.detail;
        self
    }
}

/// Why the PDP could not give a verdict. Every variant ends in a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PdpError {
    /// The PDP did not answer within `pdp_timeout_ms`.
    #[error("policy decision timed out")]
    Timeout,
    /// The PDP panicked.
    #[error("policy decision point failed internally")]
    Panicked,
    /// The PDP reported an error.
    #[error("policy decision failed: {0}")]
    Failed(String),
}

/// The slice of the policy that the enforcement point requires.
pub trait PolicyDecisionPoint: Send + Sync + 'static {
    /// Decides one request. Must not block for long: the caller enforces
    /// `pdp_timeout_ms` and treats a late answer as a refusal.
    fn decide(&self, req: &ConnectionRequest) -> Result<Ruling, PdpError>;

    /// Whether a call may wait on anything (files, `/proc`, locks held
    /// elsewhere): such a PDP is asked on the blocking pool, so that a
    /// stall holds one thread and is refused at `pdp_timeout`. A PDP that
    /// only computes (`false`) is asked inline, which saves two thread
    /// hand-offs per connection. The default is the safe answer.
    fn may_block(&self) -> bool {
        true
    }
}

/// A dependency-free [`PolicyDecisionPoint`]: allow a connection only when
/// its host and port are admitted by the egress allowlist; everything else
/// is denied (fail-closed), or in learn mode let through as learned.
/// Mirrors `[network] egress_allowlist`.
#[derive(Debug, Clone, Default)]
pub struct AllowlistPdp {
    allowlist: Allowlist,
    mode: Mode,
}

impl AllowlistPdp {
    /// Wraps an allowlist (enforcing).
    pub fn new(allowlist: Allowlist) -> Self {
        Self {
            allowlist,
            mode: Mode::Enforce,
        }
    }

    /// The same PDP in `mode` (`run --learn`: [`Mode::Learn`]).
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The allowlist this PDP enforces.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }
}

impl PolicyDecisionPoint for AllowlistPdp {
    fn decide(&self, req: &ConnectionRequest) -> Result<Ruling, PdpError> {
        Ok(match self.allowlist.find(&req.host, req.port) {
            Some(rule) => Ruling {
                decision: Decision::Allow,
                reason: format!("allowed by rule \"{rule}\""),
            },
            None => unlisted(self.mode, &req.host, req.port),
        })
    }

    /// A lookup in memory: nothing to wait for.
    fn may_block(&self) -> bool {
        false
    }
}

/// The ruling for a destination no rule admits: deny, or in learn mode
/// allow with a `learn:` reason (destination safety is still checked
/// after the decision, where every allowed destination is vetted).
pub(crate) fn unlisted(mode: Mode, host: &Host, port: u16) -> Ruling {
    match mode.unlisted(&format!("{}:{port}", host_port_host(host))) {
        Ok(reason) => Ruling {
            decision: Decision::Allow,
            reason,
        },
        Err(reason) => Ruling {
            decision: Decision::Deny,
            reason,
        },
    }
}

/// Formats a host for `host:port` display (IPv6 in brackets).
pub(crate) fn host_port_host(host: &Host) -> String {
    match host {
        Host::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        other => other.to_string(),
    }
}

/// How the enforcement point behaves when it cannot get a definitive
/// `Allow` (PDP error or timeout, malformed handshake, audit failure…).
///
/// Only `Closed` exists: there is deliberately no open mode to configure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailMode {
    /// Refuse the connection (the default and the only mode).
    #[default]
    Closed,
}

/// How much operators can trust the platform (PRODUCT.md W0 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnforcementTier {
    /// The proxy is backed by kernel-level deny (network namespace +
    /// nftables): the agent cannot route around it.
    KernelEnforced,
    /// Only the proxy: an agent that ignores `HTTPS_PROXY` is not stopped.
    ProxyOnly,
}

impl EnforcementTier {
    /// The tier name printed by `secureops tier`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementTier::KernelEnforced => "kernel-enforced",
            EnforcementTier::ProxyOnly => "proxy-only",
        }
    }
}
