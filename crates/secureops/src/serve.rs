//! `secureops proxy`, `secureops run` and `secureops tier`: start the
//! enforcement point with its policy and audit log, and stop it cleanly.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use secureops_audit::AuditLog;
use secureops_proxy::{AllowlistPdp, EgressProxy, ProxyContext, Resolver};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Loaded};

/// A running proxy with its audit log.
pub(crate) struct Guard {
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    audit: AuditLog,
}

impl Guard {
    pub(crate) async fn start(
        loaded: &Loaded,
        audit_path: Option<&Path>,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
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
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let _ = self.served.await;
        self.audit.close().await.context("cannot close the audit log")?;
        Ok(())
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

pub(crate) fn load(config: Option<&Path>) -> anyhow::Result<Loaded> {
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
