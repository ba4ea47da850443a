//! `secureops check`: the decision the proxy would take, without traffic.

use std::path::Path;
use std::process::ExitCode;

use secureops_audit::Via;
use secureops_policy::{CredentialGlobs, Taint};
use secureops_policy::{Host, vet};
use secureops_proxy::peek::http_head::{HeadError, split_authority};
use secureops_proxy::{AllowlistPdp, ConnectionRequest, ContextPdp, Decision, PdpError, PolicyDecisionPoint, Ruling};

use crate::config;
use crate::out::outln;

/// A decision function over one request.
type Decide = dyn Fn(&ConnectionRequest) -> Result<Ruling, PdpError>;

/// Prints `allow|deny|escalate REASON`; exit 0 allow, 1 deny/escalate, 2 error.
pub fn check(config: Option<&Path>, pid: Option<u32>, allow: &[String], dest: &str) -> ExitCode {
    let mut loaded = match config::load(config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    for rule in allow {
        if let Err(e) = config::add_flag(&mut loaded.allowlist, "--allow", rule) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let exe = match pid {
        Some(p) => match std::fs::read_link(format!("/proc/{p}/exe")) {
            Ok(exe) => Some(exe.to_string_lossy().into_owned()),
            Err(e) => {
                eprintln!("error: process {p}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    // What the proxy would refuse as a destination is a deny here too
    // (contract: `deny` and why, exit 1), not a usage error.
    if let Some(bad) = dest.chars().find(|&c| c == '@' || c.is_whitespace() || c.is_control()) {
        return verdict(
            Decision::Deny,
            &format!("invalid host {dest:?}: invalid character {bad:?}"),
        );
    }
    let (host, port) = match split_authority(dest) {
        Ok((h, p)) => (h, p.unwrap_or(443)),
        Err(e) => {
            let why = match e {
                HeadError::Malformed(why) => why,
                other => other.to_string(),
            };
            return verdict(Decision::Deny, &format!("invalid destination {dest:?}: {why}"));
        }
    };
    let host = match secureops_policy::normalize_host(host) {
        Ok(h) => h,
        Err(e) => return verdict(Decision::Deny, &format!("invalid host {host:?}: {e}")),
    };
    let pdp: Box<Decide> = match (&loaded.context, pid) {
        (Some(c), Some(p)) => {
            let pdp = context_pdp(&loaded, c);
            let taint = live_taint(p, &c.globs);
            Box::new(move |req| pdp.decide_with(req, taint.clone()))
        }
        (Some(c), None) => {
            // Without --pid the request has no process: judge as a
            // process that matches no rule and read no secret.
            let mut pdp = context_pdp(&loaded, c);
            pdp.watch = None;
            Box::new(move |req| {
                let mut req = req.clone();
                req.pid = Some(0);
                pdp.decide_with(&req, None)
            })
        }
        (None, _) => {
            let pdp = AllowlistPdp::new(loaded.allowlist.clone());
            Box::new(move |req| pdp.decide(req))
        }
    };
    let req = ConnectionRequest {
        host: host.clone(),
        port,
        via: Via::Connect,
        peer: None,
        pid: None,
        exe: None,
        process_detail: None,
    };
    let req = ConnectionRequest { pid, exe, ..req };
    let ruling = match pdp(&req) {
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
    outln!("{} {reason}", d.as_str());
    if d == Decision::Allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn context_pdp(loaded: &config::Loaded, c: &config::ContextLoaded) -> ContextPdp {
    ContextPdp {
        allowlist: loaded.allowlist.clone(),
        taint_allowlist: c.taint_allowlist.clone(),
        on_taint: match c.on_taint {
            config::OnTaint::Deny => Decision::Deny,
            config::OnTaint::Escalate => Decision::Escalate,
        },
        rules: c.rules.clone(),
        watch: None,
        hashes: Default::default(),
        mode: loaded.mode,
    }
}

/// The live context `check` can see from outside the proxy: a credential
/// file that the process (or an ancestor) holds open right now counts as
/// a read this instant. Past reads are known only to the running proxy.
fn live_taint(pid: u32, globs: &CredentialGlobs) -> Option<Taint> {
    let facts = secureops_proxy::procinfo::facts(pid)?;
    let chain = std::iter::once(pid).chain(facts.ancestors.iter().map(|(p, _)| *p));
    for p in chain {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(path) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if globs.matches(&path).is_some() {
                return Some(Taint {
                    path: path.to_string_lossy().into_owned(),
                    pid: p,
                    start_ms: facts.start_ms,
                    pgid: facts.pgid,
                    at_ms: secureops_proxy::procinfo::now_ms(),
                });
            }
        }
    }
    None
}
