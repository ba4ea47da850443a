//! The policy decision point with process context (PRODUCT.md B.5 step 3):
//! the allowlist, plus who is asking. A process that read a credential file
//! within `taint_window_ms` may reach only `taint_allowlist`; everything
//! else gets `on_taint`. Rules by executable extend the allowlist for one
//! program only. When context rules exist and the process cannot be
//! attributed, the decision fails closed. In learn mode a destination no
//! rule admits is let through as learned; taint still refuses first.

use std::path::PathBuf;
use std::sync::Arc;

use secureops_policy::{Allowlist, Host, Mode, Taint};

use crate::credwatch::CredWatch;
use crate::decision::{ConnectionRequest, Decision, PdpError, PolicyDecisionPoint, Ruling, host_port_host, unlisted};
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
    /// What happens to a destination no rule admits (`run --learn`:
    /// let through as learned, after the taint check).
    pub mode: Mode,
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
            return plain(&self.allowlist, self.mode, &req.host, req.port);
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
        Ok(unlisted(self.mode, &req.host, req.port))
    }
}

fn plain(allowlist: &Allowlist, mode: Mode, host: &Host, port: u16) -> Result<Ruling, PdpError> {
    match allowlist.find(host, port) {
        Some(rule) => allow(format!("allowed by rule \"{rule}\"")),
        None => Ok(unlisted(mode, host, port)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use secureops_audit::Via;
    use secureops_policy::normalize_host;

    use super::*;
    use crate::decision::AllowlistPdp;

    fn req(host: &str, pid: Option<u32>) -> ConnectionRequest {
        ConnectionRequest {
            host: normalize_host(host).unwrap(),
            port: 443,
            via: Via::Sni,
            peer: None,
            pid,
            exe: Some("/usr/bin/curl".into()),
            process_detail: None,
        }
    }

    fn pdp(mode: Mode) -> ContextPdp {
        ContextPdp {
            allowlist: Allowlist::parse(&["listed.test"]).unwrap(),
            taint_allowlist: Allowlist::new(),
            on_taint: Decision::Deny,
            rules: Vec::new(),
            watch: None,
            hashes: ExeHashes::default(),
            mode,
        }
    }

    #[test]
    fn learn_mode_lets_unlisted_destinations_through_but_taint_still_refuses() {
        let taint = Taint {
            path: "/work/.env".into(),
            pid: 7,
            start_ms: 0,
            pgid: 7,
            at_ms: procinfo::now_ms(),
        };
        let learning = pdp(Mode::Learn);
        let r = learning.decide_with(&req("new.test", Some(7)), None).unwrap();
        assert_eq!(r.decision, Decision::Allow);
        assert!(r.reason.starts_with("learn: new.test:443 "), "{}", r.reason);
        let r = learning.decide_with(&req("listed.test", Some(7)), None).unwrap();
        assert_eq!(r.reason, "allowed by rule \"listed.test\"");
        // Taint comes first, learn or not.
        let r = learning.decide_with(&req("new.test", Some(7)), Some(taint)).unwrap();
        assert_eq!(r.decision, Decision::Deny);
        assert!(r.reason.contains(".env"), "{}", r.reason);
        // Enforcing: the same destination is refused.
        let r = pdp(Mode::Enforce).decide_with(&req("new.test", Some(7)), None).unwrap();
        assert_eq!(r.decision, Decision::Deny);
        assert_eq!(r.reason, "new.test:443 is not in the egress allowlist");
        // The plain allowlist PDP, both ways.
        let plain = AllowlistPdp::new(Allowlist::new());
        assert_eq!(plain.decide(&req("new.test", None)).unwrap().decision, Decision::Deny);
        let r = plain.with_mode(Mode::Learn).decide(&req("new.test", None)).unwrap();
        assert_eq!(r.decision, Decision::Allow);
        assert!(r.reason.starts_with("learn:"), "{}", r.reason);
    }
}
