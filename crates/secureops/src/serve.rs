//! `secureops proxy`, `secureops run` and `secureops tier`: start the
//! enforcement point with its policy and audit log, and stop it cleanly.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use secureops_audit::AuditLog;
use secureops_proxy::credwatch::CredWatch;
use secureops_proxy::{
    AllowlistPdp, ContextPdp, Decision, DnsPolicy, DnsSinkhole, EgressProxy, PolicyDecisionPoint, ProxyContext,
    Resolver,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Loaded};
use crate::out::announce;

/// Where the DNS sinkhole listens.
pub(crate) enum DnsListen {
    /// UDP and TCP on `[dns] listen`.
    Configured,
    /// No sinkhole.
    Off,
}

/// A running proxy and DNS sinkhole with their audit log.
pub(crate) struct Guard {
    pub(crate) addr: SocketAddr,
    /// The sinkhole's address (UDP and TCP), when one runs.
    pub(crate) dns: Option<SocketAddr>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    dns_served: Option<tokio::task::JoinHandle<()>>,
    audit: AuditLog,
    /// The escalation broker and its control socket, when the policy can
    /// escalate.
    control: Option<crate::escalate_cmd::Control>,
    /// The `/metrics` listener, with `[metrics]`.
    pub(crate) metrics: Option<crate::metrics::Server>,
}

impl Guard {
    /// Starts the proxy (on `listen`, else `[proxy] listen`) and, when no
    /// `listen` override is given (`secureops proxy`), the DNS sinkhole on
    /// `[dns] listen`. With an override (`secureops run` on an ephemeral
    /// port) no sinkhole is started: `run` binds its own inside the
    /// command's namespace ([`Guard::start_confined`]).
    pub(crate) async fn start(
        loaded: &Loaded,
        audit_path: Option<&Path>,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let dns = if listen.is_some() {
            DnsListen::Off
        } else {
            DnsListen::Configured
        };
        Self::start_with(loaded, audit_path, listen, dns).await
    }

    /// Like [`Guard::start`], with the sinkhole's listeners chosen by `dns`.
    pub(crate) async fn start_with(
        loaded: &Loaded,
        audit_path: Option<&Path>,
        listen: Option<SocketAddr>,
        dns: DnsListen,
    ) -> anyhow::Result<Self> {
        let mut proxy_config = loaded.proxy_config();
        if let Some(addr) = listen {
            proxy_config.listen = addr;
        }
        tracing::debug!(settings = ?proxy_config, "proxy settings");
        // Process context needs to know who connects: look sockets up in
        // this machine's own tables (clients on this host).
        let attribution = loaded
            .context
            .is_some()
            .then(secureops_proxy::attribution::ProcNet::own);
        let (ctx, audit, control) = shared(loaded, audit_path, proxy_config.clone(), attribution.clone(), None)?;
        let stats = ctx.stats.clone();
        let proxy = EgressProxy::bind(ctx)
            .await
            .with_context(|| format!("cannot listen on {}", proxy_config.listen))?;
        let addr = proxy.local_addr()?;
        let mut dns_config = loaded.dns_config();
        dns_config.stats.clone_from(&stats);
        let policy = DnsPolicy {
            allowlist: loaded.allowlist.clone(),
            private: loaded.private.clone(),
            mode: loaded.mode,
            attribution: attribution.map(|a| Arc::new(a) as Arc<dyn secureops_proxy::dns::PeerAttribution>),
        };
        let sinkhole = match dns {
            DnsListen::Configured => Some(
                DnsSinkhole::bind(dns_config, policy, audit.clone())
                    .with_context(|| format!("cannot start the DNS sinkhole on {}", loaded.raw.dns.listen))?,
            ),
            DnsListen::Off => None,
        };
        let dns = sinkhole.as_ref().map(DnsSinkhole::local_addr);
        let shutdown = CancellationToken::new();
        let broker = control.as_ref().map(|c| Arc::clone(&c.broker));
        let metrics = crate::metrics::start(loaded, stats, &audit, broker, shutdown.clone()).await?;
        let served = tokio::spawn(proxy.run(shutdown.clone()));
        let dns_served = sinkhole.map(|s| tokio::spawn(s.run(shutdown.clone())));
        Ok(Self {
            addr,
            dns,
            shutdown,
            served,
            dns_served,
            audit,
            control,
            metrics,
        })
    }

    /// Starts the guard on listeners bound inside a confined command's
    /// namespace (`secureops run`): explicit proxy, transparent listener and
    /// DNS sinkhole, with processes looked up in that namespace.
    pub(crate) async fn start_confined(
        loaded: &Loaded,
        audit_path: Option<&Path>,
        listeners: crate::confine::Listeners,
        attribution: secureops_proxy::attribution::ProcNet,
    ) -> anyhow::Result<Self> {
        // The command is already started (in its namespace).
        raise_fd_limit(loaded.proxy_config().max_connections);
        let attribution = attribution.with_diag(secureops_proxy::sockdiag::SockDiag::from_fd(listeners.diag));
        // The confined command's own namespace may not answer escalations.
        let netns = attribution.netns();
        let (ctx, audit, control) = shared(
            loaded,
            audit_path,
            loaded.proxy_config(),
            Some(attribution.clone()),
            netns,
        )?;
        let stats = ctx.stats.clone();
        let explicit = EgressProxy::from_std(listeners.explicit, Arc::clone(&ctx), false)?;
        let transparent = EgressProxy::from_std(listeners.transparent, Arc::clone(&ctx), true)?;
        let addr = explicit.local_addr()?;
        let policy = DnsPolicy {
            allowlist: loaded.allowlist.clone(),
            private: loaded.private.clone(),
            mode: loaded.mode,
            attribution: Some(Arc::new(attribution)),
        };
        let mut dns_config = loaded.dns_config();
        dns_config.stats.clone_from(&stats);
        let sinkhole = DnsSinkhole::from_std(listeners.dns_udp, listeners.dns_tcp, dns_config, policy, audit.clone())
            .context("cannot start the DNS sinkhole")?;
        let dns = Some(sinkhole.local_addr());
        let shutdown = CancellationToken::new();
        // On the host side: CMD's namespace cannot reach it.
        let broker = control.as_ref().map(|c| Arc::clone(&c.broker));
        let metrics = crate::metrics::start(loaded, stats, &audit, broker, shutdown.clone()).await?;
        let token = shutdown.clone();
        let served = tokio::spawn(async move {
            tokio::join!(explicit.run(token.clone()), transparent.run(token));
        });
        let dns_served = Some(tokio::spawn(sinkhole.run(shutdown.clone())));
        Ok(Self {
            addr,
            dns,
            shutdown,
            served,
            dns_served,
            audit,
            control,
            metrics,
        })
    }

    /// Stops accepting, drains, and writes the audit log's closing entry.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        // Held requests are refused first, so their entries precede the
        // closing one.
        if let Some(control) = &self.control {
            control.broker.close();
        }
        self.shutdown.cancel();
        let _ = self.served.await;
        if let Some(dns) = self.dns_served {
            let _ = dns.await;
        }
        if let Some(control) = self.control {
            control.stop().await;
        }
        if let Some(metrics) = self.metrics {
            metrics.stopped().await;
        }
        let entries = self.audit.close().await.context("cannot close the audit log")?;
        tracing::info!(entries, "audit log closed");
        Ok(())
    }
}

fn open_audit(loaded: &Loaded, audit_path: Option<&Path>) -> anyhow::Result<AuditLog> {
    #[cfg(feature = "bench-null-audit")]
    if std::env::var_os("SECUREOPS_BENCH_NULL_AUDIT").is_some() {
        eprintln!("secureops: warning: benchmark build with SECUREOPS_BENCH_NULL_AUDIT: nothing is audited");
        return Ok(AuditLog::null());
    }
    let audit_config = loaded.audit_config(audit_path);
    let log = AuditLog::open(audit_config.clone())
        .with_context(|| format!("cannot open audit log {}", audit_config.path.display()))?;
    tracing::info!(path = %audit_config.path.display(), key = %log.fingerprint(), "audit log open");
    Ok(match &loaded.tally {
        Some(tally) => log.with_observer(Arc::clone(tally)),
        None => log,
    })
}

/// Raises the soft open-file limit to the hard one, as servers do: every
/// tunnel holds two sockets (and two pipes while bulk data moves), so the
/// usual soft default of 1024 would cap `max_connections` far below its
/// default. Warns when even the hard limit is short.
///
/// Called once the command of `secureops run` (if any) is started: it
/// keeps the limit it was given, since a raised soft limit breaks programs
/// that still use `select()`, which cannot watch descriptors past 1023.
pub(crate) fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    if cur.current != cur.maximum {
        let raised = Rlimit {
            current: cur.maximum,
            maximum: cur.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // Two descriptors per connection plus the guard's own; a tunnel that
    // is moving bytes holds two more (a pipe), others none.
    let fit = limit.saturating_sub(256) / 2;
    let wanted = max_connections as u64;
    if fit < wanted / 2 {
        tracing::warn!(
            limit,
            max_connections,
            fit,
            "the open-file limit fits far fewer connections than max_connections; the others are refused"
        );
    } else if fit < wanted {
        tracing::info!(
            limit,
            max_connections,
            fit,
            "the open-file limit fits a few fewer connections than max_connections"
        );
    }
}

/// What both ways of starting share: the audit log, the resolver, the
/// decision point and the escalation control socket, in one context.
fn shared(
    loaded: &Loaded,
    audit_path: Option<&Path>,
    config: secureops_proxy::ProxyConfig,
    attribution: Option<secureops_proxy::attribution::ProcNet>,
    agent_netns: Option<std::path::PathBuf>,
) -> anyhow::Result<(Arc<ProxyContext>, AuditLog, Option<crate::escalate_cmd::Control>)> {
    let audit = open_audit(loaded, audit_path)?;
    let resolver = Resolver::new(
        loaded.hosts.clone(),
        &loaded.upstream,
        loaded.private.clone(),
        config.connect_timeout,
    )?;
    let control = crate::escalate_cmd::Control::start(loaded, agent_netns)?;
    let ctx = Arc::new(ProxyContext {
        config,
        pdp: crate::fault_hook::wrap(policy(loaded)),
        resolver,
        audit: audit.clone(),
        audit_down: Default::default(),
        attribution,
        escalation: control.as_ref().map(|c| Arc::clone(&c.broker)),
        pacer: Default::default(),
        stats: crate::metrics::stats_for(loaded),
    });
    Ok((ctx, audit, control))
}

/// The decision point for this configuration: the allowlist alone, or with
/// `[context]` the context PDP (whose credential watch starts here).
fn policy(loaded: &Loaded) -> Arc<dyn PolicyDecisionPoint> {
    let Some(c) = &loaded.context else {
        return Arc::new(AllowlistPdp::new(loaded.allowlist.clone()).with_mode(loaded.mode));
    };
    let watch = if c.globs.is_empty() {
        None
    } else {
        let roots = [
            loaded.home.clone(),
            std::env::temp_dir(),
            std::env::current_dir().unwrap_or_default(),
        ];
        let store = secureops_policy::TaintStore::new(c.window_ms, c.scope);
        match CredWatch::start(c.globs.clone(), store, &roots) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("secureops: warning: {e}");
                None
            }
        }
    };
    let pdp = ContextPdp {
        allowlist: loaded.allowlist.clone(),
        taint_allowlist: c.taint_allowlist.clone(),
        on_taint: match c.on_taint {
            crate::config::OnTaint::Deny => Decision::Deny,
            crate::config::OnTaint::Escalate => Decision::Escalate,
        },
        rules: c.rules.clone(),
        watch,
        hashes: Default::default(),
        mode: loaded.mode,
    };
    Arc::new(pdp)
}

/// Runs the guard's async part on a multi-threaded runtime, then shuts the
/// runtime down without waiting long for blocking calls: a PDP call that
/// stalls keeps its blocking thread (its request was refused at
/// `pdp_timeout` already), and it must not hold SIGTERM's clean stop.
pub(crate) fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let out = runtime.block_on(work);
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    out
}

/// How long a stopping guard waits for blocking calls still running.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

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
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.map_or_else(|| "<built-in default>".into(), |p| p.display().to_string()),
        rules = loaded.allowlist.len(),
        "secureops proxy starting"
    );
    // Only clients that use the proxy are guarded (`run` confines them).
    tracing::info!(
        tier = secureops_proxy::EnforcementTier::ProxyOnly.as_str(),
        "enforcement: clients must use the proxy (HTTPS_PROXY); `secureops run` confines a command"
    );
    block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        raise_fd_limit(loaded.proxy_config().max_connections);
        let guard = Guard::start(&loaded, None, None).await?;
        announce(format_args!("listening proxy={}", guard.addr));
        tracing::info!(addr = %guard.addr, "proxy listening");
        if let Some(dns) = guard.dns {
            announce(format_args!("listening dns={dns}"));
            tracing::info!(addr = %dns, "DNS sinkhole listening (UDP and TCP)");
        }
        if let Some(control) = &guard.control {
            announce(format_args!("listening escalation={}", control.path.display()));
            tracing::info!(socket = %control.path.display(), "escalation control socket listening");
        }
        if let Some(metrics) = &guard.metrics {
            announce(format_args!("listening metrics={}", metrics.addr));
        }
        let signal = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal, "shutting down");
        guard.stop().await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
