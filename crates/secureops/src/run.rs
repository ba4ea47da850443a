//! `secureops run` and `secureops tier`: a command behind the guard, and
//! how much the platform backs the guard.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use secureops_policy::Rule;
use secureops_proxy::attribution::ProcNet;
use tokio::signal::unix::{SignalKind, signal};

use crate::confine;
use crate::serve::{Guard, load, runtime};

/// `secureops run`: CMD behind the guard; exits with CMD's status (128+N
/// when signal N ended it).
pub fn run(
    config: Option<&Path>,
    allow: &[String],
    audit: Option<&Path>,
    weak: bool,
    cmd: &[String],
) -> anyhow::Result<ExitCode> {
    let mut loaded = load(config)?;
    for rule in allow {
        let parsed: Rule = rule.parse().with_context(|| format!("--allow {rule:?}"))?;
        loaded.allowlist.push(parsed);
    }
    // The namespace is created before the runtime starts (see confine).
    match confine::spawn(cmd) {
        Ok((confined, listeners)) => run_confined(&loaded, audit, confined, listeners),
        Err(e) if weak => {
            eprintln!(
                "secureops: warning: {e:#}; running proxy-only (--weak): tools that ignore HTTPS_PROXY are not stopped"
            );
            run_weak(&loaded, audit, cmd)
        }
        Err(e) => bail!(
            "{e:#}\nsecureops run refuses to start the command unconfined; rerun with --weak to accept proxy-only \
             enforcement (see `secureops tier`)"
        ),
    }
}

fn run_confined(
    loaded: &crate::config::Loaded,
    audit: Option<&Path>,
    mut confined: confine::Confined,
    listeners: confine::Listeners,
) -> anyhow::Result<ExitCode> {
    let pid = confined.child.id();
    runtime()?.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let guard = Guard::start_confined(loaded, audit, listeners, ProcNet::new(pid)).await?;
        confined.go().context("cannot start the command")?;
        let mut child = confined.child;
        let mut wait = tokio::task::spawn_blocking(move || child.wait());
        let status = loop {
            tokio::select! {
                status = &mut wait => break status.context("wait")??,
                _ = term.recv() => forward(pid, rustix::process::Signal::TERM),
                _ = int.recv() => forward(pid, rustix::process::Signal::INT),
            }
        };
        guard.stop().await?;
        Ok(exit_code(status))
    })
}

/// Proxy-only: the proxy on an ephemeral loopback port and the proxy
/// variables; nothing stops a tool that ignores them.
fn run_weak(loaded: &crate::config::Loaded, audit: Option<&Path>, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command given")
    };
    runtime()?.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Each run gets its own ephemeral port: two runs never collide.
        let guard = Guard::start(loaded, audit, Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
        let url = format!("http://{}", guard.addr);
        let mut child = tokio::process::Command::new(program);
        child.args(args);
        crate::confine::proxy_env(child.as_std_mut(), &url);
        let mut child = child.spawn().with_context(|| format!("cannot start {program:?}"))?;
        // Only now: the command keeps the open-file limit it was given.
        crate::serve::raise_fd_limit(loaded.proxy_config().max_connections);
        let pid = child.id().unwrap_or(0);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status?,
                _ = term.recv() => forward(pid, rustix::process::Signal::TERM),
                _ = int.recv() => forward(pid, rustix::process::Signal::INT),
            }
        };
        guard.stop().await?;
        Ok(exit_code(status))
    })
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn forward(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// `secureops tier`: the tier as the first word, then why.
pub fn tier(json: bool) {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let bpf_lsm = lsm.split(',').any(|l| l.trim() == "bpf");
    let root = rustix::process::geteuid().is_root();
    let (tier, why) = match confine::probe() {
        Ok(()) => (
            secureops_proxy::EnforcementTier::KernelEnforced,
            format!(
                "`secureops run` confines commands in a {} with nftables redirecting all TCP to the proxy and DNS to the sinkhole; other traffic is dropped",
                confine::describe()
            ),
        ),
        Err(e) => (
            secureops_proxy::EnforcementTier::ProxyOnly,
            format!("{e}; `secureops run` needs --weak and only sets proxy variables"),
        ),
    };
    let credwatch = secureops_proxy::credwatch::CredWatch::probe();
    let cred_note = match &credwatch {
        Ok(()) => "credential-file watch (fanotify) available: [context] taint is enforced".to_owned(),
        Err(e) => e.to_string(),
    };
    let lsm_note = if bpf_lsm {
        "BPF LSM listed (not used yet)"
    } else {
        "BPF LSM not listed or securityfs not mounted"
    };
    if json {
        let v = serde_json::json!({
            "tier": tier.as_str(),
            "why": why,
            "root": root,
            "bpf_lsm": bpf_lsm,
            "credential_watch": credwatch.is_ok(),
        });
        println!("{v}");
    } else {
        println!("{} — {why}", tier.as_str());
        println!("running as root: {root}; {lsm_note}");
        println!("{cred_note}");
    }
}
