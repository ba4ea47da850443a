//! `secureops proxy`, `secureops run` and `secureops tier`: start the
//! enforcement point with its policy and audit log, and stop it cleanly.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use secureops_audit::AuditLog;
use secureops_policy::Rule;
use secureops_proxy::{AllowlistPdp, EgressProxy, ProxyContext, Resolver};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Loaded};

/// A running proxy with its audit log.
struct Guard {
    addr: SocketAddr,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    audit: AuditLog,
}

impl Guard {
    async fn start(loaded: &Loaded, audit_path: Option<&Path>, listen: Option<SocketAddr>) -> anyhow::Result<Self> {
        let audit_config = loaded.audit_config(audit_path);
        let audit = AuditLog::open(audit_config.clone())
            .with_context(|| format!("cannot open audit log {}", audit_config.path.display()))?;
        let mut proxy_config = loaded.proxy_config();
        if let Some(addr) = listen {
            proxy_config.listen = addr;
        }
        let resolver = Resolver::new(
            loaded.hosts.clone(),
            &loaded.upstream,
            loaded.private.clone(),
            proxy_config.connect_timeout,
        )?;
        let ctx = ProxyContext {
            config: proxy_config.clone(),
            pdp: Arc::new(AllowlistPdp::new(loaded.allowlist.clone())),
            resolver,
            audit: audit.clone(),
            audit_down: Default::default(),
        };
        let proxy = EgressProxy::bind(ctx)
            .await
            .with_context(|| format!("cannot listen on {}", proxy_config.listen))?;
        let addr = proxy.local_addr()?;
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(proxy.run(shutdown.clone()));
        Ok(Self {
            addr,
            shutdown,
            served,
            audit,
        })
    }

    /// Stops accepting, drains, and writes the audit log's closing entry.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let _ = self.served.await;
        self.audit.close().await.context("cannot close the audit log")?;
        Ok(())
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn load(config: Option<&Path>) -> anyhow::Result<Loaded> {
    let loaded = config::load(config)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    Ok(loaded)
}

/// `secureops proxy`: serve until SIGINT/SIGTERM, then exit 0.
pub fn proxy(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let loaded = load(config)?;
    runtime()?.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let guard = Guard::start(&loaded, None, None).await?;
        println!("listening proxy={}", guard.addr);
        std::io::stdout().flush()?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        guard.stop().await?;
        Ok(ExitCode::SUCCESS)
    })
}

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
