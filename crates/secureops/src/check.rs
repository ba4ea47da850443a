//! `secureops check`: the decision the proxy would take, without traffic.

use std::path::Path;
use std::process::ExitCode;

use secureops_audit::Via;
use secureops_policy::{Host, vet};
use secureops_proxy::peek::http_head::split_authority;
use secureops_proxy::{AllowlistPdp, ConnectionRequest, Decision, PolicyDecisionPoint};

use crate::config;

/// Prints `allow|deny|escalate REASON`; exit 0 allow, 1 deny/escalate, 2 error.
pub fn check(config: Option<&Path>, pid: Option<u32>, dest: &str) -> ExitCode {
    let loaded = match config::load(config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if pid.is_some() {
        eprintln!("error: --pid needs process context, which this version does not have yet");
        return ExitCode::from(2);
    }
    let (host, port) = match split_authority(dest) {
        Ok((h, p)) => (h, p.unwrap_or(443)),
        Err(e) => {
            eprintln!("error: {dest:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let host = match secureops_policy::normalize_host(host) {
        Ok(h) => h,
        Err(e) => return verdict(Decision::Deny, &format!("invalid host {host:?}: {e}")),
    };
    let pdp = AllowlistPdp::new(loaded.allowlist.clone());
    let req = ConnectionRequest {
        host: host.clone(),
        port,
        via: Via::Connect,
        peer: None,
        pid: None,
        exe: None,
    };
    let ruling = match pdp.decide(&req) {
        Ok(r) => r,
        Err(e) => return verdict(Decision::Deny, &format!("{e}; refusing (fail-closed)")),
    };
    if ruling.decision != Decision::Allow {
        return verdict(ruling.decision, &ruling.reason);
    }
    // Destination safety on what is known without querying resolvers: an
    // IP literal or the `[dns] hosts` answer.
    let known: Vec<_> = match &host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(n) => loaded.hosts.get(n).cloned().unwrap_or_default(),
    };
    // As the proxy does: unsafe addresses are dropped; none left is a deny.
    if !known.is_empty() && known.iter().all(|ip| vet(*ip, &loaded.private).is_err()) {
        let first = known.first().map(|ip| vet(*ip, &loaded.private));
        if let Some(Err(e)) = first {
            return verdict(Decision::Deny, &e.to_string());
        }
    }
    verdict(Decision::Allow, &ruling.reason)
}

fn verdict(d: Decision, reason: &str) -> ExitCode {
    println!("{} {reason}", d.as_str());
    if d == Decision::Allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
