//! The policy decision point with process context (PRODUCT.md B.5 step 3):
//! the allowlist, plus who is asking. A process that read a credential file
//! within `taint_window_ms` may reach only `taint_allowlist`; everything
//! else gets `on_taint`. Rules by executable extend the allowlist for one
//! program only. When context rules exist and the process cannot be
//! attributed, the decision fails closed.

use std::path::PathBuf;
use std::sync::Arc;

use secureops_policy::{Allowlist, Host, Taint};

use crate::credwatch::CredWatch;
use crate::decision::{ConnectionRequest, Decision, PdpError, PolicyDecisionPoint, Ruling, host_port_host};
use crate::procinfo::{self, ExeHashes};

/// `[[context.process]]`: extra destinations for one program.
#[derive(Debug, Clone)]
pub struct ProcessRule {
    /// The executable's path.
    pub exe: PathBuf,
    /// When set, the rule applies only to a binary with this SHA-256.
    pub sha256: Option<String>,
    /// Destinations this program may reach besides the global allowlist.
    pub allowlist: Allowlist,
    /// Ask a person instead of allowing outright.
    pub escalate: bool,
}

/// Allowlist + taint + process rules.
#[derive(Debug)]
pub struct ContextPdp {
    /// The global allowlist.
    pub allowlist: Allowlist,
    /// What a tainted process may still reach.
    pub taint_allowlist: Allowlist,
    /// `Deny` or `Escalate` for a tainted process going elsewhere.
    pub on_taint: Decision,
    /// Rules by executable.
    pub rules: Vec<ProcessRule>,
    /// Credential-open events (`None`: taint not watched here).
    pub watch: Option<Arc<CredWatch>>,
    /// Executable hashes for rules with `sha256`.
    pub hashes: ExeHashes,
}

impl ContextPdp {
    fn needs_process(&self) -> bool {
        self.watch.is_some() || !self.rules.is_empty()
    }
}

fn allow(reason: String) -> Result<Ruling, PdpError> {
    Ok(Ruling {
        decision: Decision::Allow,
        reason,
    })
}

impl PolicyDecisionPoint for ContextPdp {
    fn decide(&self, req: &ConnectionRequest) -> Result<Ruling, PdpError> {
        let taint = match (req.pid, &self.watch) {
            (Some(pid), Some(w)) => w.taint_of(pid),
            _ => None,
        };
        self.decide_with(req, taint)
    }
}

impl ContextPdp {
    /// Decides `req` given the taint (if any) of its process; `decide`
    /// takes it from the credential watch, `secureops check --pid` from
    /// the files the process holds open.
    pub fn decide_with(&self, req: &ConnectionRequest, taint: Option<Taint>) -> Result<Ruling, PdpError> {
        let dest = format!("{}:{}", host_port_host(&req.host), req.port);
        let Some(pid) = req.pid else {
            if self.needs_process() {
                return Ok(Ruling {
                    decision: Decision::Deny,
                    reason: format!(
                        "{dest}: the connecting process could not be identified and [context] rules need it (fail-closed)"
                    ),
                });
            }
            return plain(&self.allowlist, &req.host, req.port, &dest);
        };
        let who = match &req.exe {
            Some(exe) => format!("process {pid} ({exe})"),
            None => format!("process {pid}"),
        };
        if let Some(taint) = taint {
            let age_ms = procinfo::now_ms().saturating_sub(taint.at_ms);
            // Name the reader when the taint came through the group or a parent.
            let who = if taint.pid == pid {
                who
            } else {
                format!("{who} (tainted through process {})", taint.pid)
            };
            if let Some(rule) = self.taint_allowlist.find(&req.host, req.port) {
                return allow(format!(
                    "{who}: {} was read {:.1} s ago, but {dest} is in taint_allowlist (rule \"{rule}\")",
                    taint.path,
                    age_ms as f64 / 1000.0
                ));
            }
            return Ok(Ruling {
                decision: self.on_taint,
                reason: format!(
                    "{who}: {} was read {:.1} s ago; a tainted process may reach only taint_allowlist, not {dest}",
                    taint.path,
                    age_ms as f64 / 1000.0
                ),
            });
        }
        if let Some(rule) = self.allowlist.find(&req.host, req.port) {
            return allow(format!("allowed by rule \"{rule}\""));
        }
        for rule in &self.rules {
            if req.exe.as_deref() != Some(rule.exe.to_string_lossy().as_ref()) {
                continue;
            }
            if let Some(want) = &rule.sha256
                && self.hashes.of_pid(pid).as_deref() != Some(want.as_str())
            {
                continue;
            }
            if let Some(r) = rule.allowlist.find(&req.host, req.port) {
                let decision = if rule.escalate {
                    Decision::Escalate
                } else {
                    Decision::Allow
                };
                return Ok(Ruling {
                    decision,
                    reason: format!("{dest} allowed for {} by its process rule \"{r}\"", rule.exe.display()),
                });
            }
        }
        Ok(Ruling {
            decision: Decision::Deny,
            reason: format!("{dest} is not in the egress allowlist"),
        })
    }
}

fn plain(allowlist: &Allowlist, host: &Host, port: u16, dest: &str) -> Result<Ruling, PdpError> {
    match allowlist.find(host, port) {
        Some(rule) => allow(format!("allowed by rule \"{rule}\"")),
        None => Ok(Ruling {
            decision: Decision::Deny,
            reason: format!("{dest} is not in the egress allowlist"),
        }),
    }
}
