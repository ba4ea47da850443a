//! `secureops run` and `secureops tier`: a command behind the guard, and
//! how much the platform backs the guard.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use secureops_policy::Rule;
use tokio::signal::unix::{SignalKind, signal};

use crate::serve::{Guard, load, runtime};

/// `secureops run`: CMD behind the guard; exits with CMD's status.
pub fn run(
    config: Option<&Path>,
    allow: &[String],
    audit: Option<&Path>,
    weak: bool,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    if !weak {
        bail!(
            "kernel confinement (a network namespace the command cannot leave) is not available in this version; \
             rerun with --weak to accept proxy-only enforcement (tools that ignore HTTPS_PROXY are not stopped)"
        );
    }
    let mut loaded = load(config)?;
    for rule in allow {
        let parsed: Rule = rule.parse().with_context(|| format!("--allow {rule:?}"))?;
        loaded.allowlist.push(parsed);
    }
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command given")
    };
    runtime()?.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Each run gets its own ephemeral port: two runs never collide.
        let guard = Guard::start(&loaded, audit, Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
        let url = format!("http://{}", guard.addr);
        let mut child = tokio::process::Command::new(program);
        child.args(args);
        for var in [
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "http_proxy",
            "all_proxy",
        ] {
            child.env(var, &url);
        }
        child.env_remove("NO_PROXY").env_remove("no_proxy");
        let mut child = child.spawn().with_context(|| format!("cannot start {program:?}"))?;
        let pid = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32));
        let status = loop {
            tokio::select! {
                status = child.wait() => break status?,
                _ = term.recv() => forward(pid, rustix::process::Signal::TERM),
                _ = int.recv() => forward(pid, rustix::process::Signal::INT),
            }
        };
        guard.stop().await?;
        let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
        Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
    })
}

fn forward(pid: Option<rustix::process::Pid>, sig: rustix::process::Signal) {
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// `secureops tier`.
pub fn tier(json: bool) {
    let tier = secureops_proxy::EnforcementTier::ProxyOnly;
    let why = "this version runs the proxy only; network-namespace confinement for `secureops run` is not built yet, \
               so a tool that ignores HTTPS_PROXY is not stopped";
    if json {
        println!("{{\"tier\":\"{}\",\"why\":\"{why}\"}}", tier.as_str());
    } else {
        println!("{} ({why})", tier.as_str());
    }
}
