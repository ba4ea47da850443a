//! What every connection task shares: configuration, the PDP, the resolver
//! and the audit log, and the accept → decide → audit steps they all take.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use secureops_audit::{AuditFinding, AuditLog, Kind, Verdict};
use secureops_policy::normalize_host;

use crate::attribution::{ProcNet, Process};
use crate::decision::{ConnectionRequest, Decision, PdpError, PolicyDecisionPoint, Ruling};
use crate::escalation::Escalations;
use crate::pace::RefusalPacer;
use crate::peek::PeekedHost;
use crate::refusal::{Refusal, one_line};
use crate::resolve::Resolver;
use crate::stats::{ProxyStats, RefusalClass};

/// Limits and timeouts of the explicit listener (`[proxy]`).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Address of the explicit listener.
    pub listen: SocketAddr,
    /// Longest a PDP answer may take; a later answer is a refusal.
    pub pdp_timeout: Duration,
    /// Longest an upstream connect may take (then 504).
    pub connect_timeout: Duration,
    /// Longest a client may take to send a complete request head.
    pub header_timeout: Duration,
    /// A tunnel (or a body transfer) idle this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; over it new ones get 503.
    pub max_connections: usize,
    /// How long to wait, inside an allowed CONNECT tunnel, for the client's
    /// first bytes before relaying anyway (server-speaks-first protocols).
    pub peek_timeout: Duration,
    /// On shutdown, how long open connections may drain.
    pub drain_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            pdp_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(5000),
            header_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            peek_timeout: Duration::from_millis(1000),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Shared state of one proxy instance.
pub struct ProxyContext {
    /// Limits and timeouts.
    pub config: ProxyConfig,
    /// The policy decision point.
    pub pdp: Arc<dyn PolicyDecisionPoint>,
    /// Resolution and destination safety.
    pub resolver: Resolver,
    /// The audit log.
    pub audit: AuditLog,
    /// Set while appends fail: requests are then refused before any
    /// upstream connect; the refusal's own append probes for recovery.
    pub audit_down: AtomicBool,
    /// Where to look up the process behind a client socket (`None`: the
    /// audit entries carry null `pid`/`exe`).
    pub attribution: Option<ProcNet>,
    /// Where escalated requests wait for a person (`None`: an `Escalate`
    /// ruling is refused at once, there is no approver).
    pub escalation: Option<Arc<Escalations>>,
    /// Holds refusals back under a flood of them (see [`crate::pace`]).
    pub pacer: RefusalPacer,
    /// Counters for metrics (`None`: the guard runs without `[metrics]`,
    /// and nothing is counted).
    pub stats: Option<Arc<ProxyStats>>,
}

impl std::fmt::Debug for ProxyContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyContext")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Resolves when the client has closed its connection. Bytes the client
/// sends meanwhile (a request body, the rest of a handshake) stay unread;
/// once some are waiting, closing can no longer be seen and this never
/// resolves.
async fn client_gone(client: &tokio::net::TcpStream) {
    let mut probe = [0u8; 1];
    match client.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// One PDP call with a panic caught, and how long it took.
fn ask(pdp: &dyn PolicyDecisionPoint, req: &ConnectionRequest) -> (Result<Ruling, PdpError>, Duration) {
    let started = Instant::now();
    let answer = std::panic::catch_unwind(AssertUnwindSafe(|| pdp.decide(req))).unwrap_or(Err(PdpError::Panicked));
    (answer, started.elapsed())
}

/// Only `Allow` is `Ok`; any other answer or error is a refusal.
fn settle(answer: Result<Ruling, PdpError>) -> Result<Ruling, Refusal> {
    match answer {
        Ok(r) if r.decision == Decision::Allow => Ok(r),
        Ok(r) => Err(Refusal::Policy(r)),
        Err(e) => Err(Refusal::Pdp(e)),
    }
}

/// Longest wait for a blocking thread to start a PDP call (all of them
/// busy, e.g. with stalled calls): then the decision is a refusal.
const PDP_QUEUE_LIMIT: Duration = Duration::from_secs(5);

/// Past `pdp_timeout`, how long to wait for a finished PDP call's answer to
/// arrive (a busy machine wakes the waiting task late).
const PDP_WAKE_SLACK: Duration = Duration::from_millis(500);

/// Longest wait for the audit writer before the decision becomes a refusal.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Build the [`AuditFinding`] recorded for a single egress decision.
///
/// The host is the normalised one when `req` is known, else as sent; the
/// process fields come from `req`.
pub fn egress_finding(
    peeked: &PeekedHost,
    req: Option<&ConnectionRequest>,
    verdict: Verdict,
    reason: &str,
) -> AuditFinding {
    let mut f = AuditFinding::new(Kind::Egress, verdict, one_line(reason));
    f.host = Some(match req {
        Some(r) => r.host.to_string(),
        None => one_line(&peeked.host),
    });
    f.port = Some(peeked.port);
    f.via = Some(peeked.via);
    if let Some(r) = req {
        f.pid = r.pid;
        f.exe.clone_from(&r.exe);
        f.detail.clone_from(&r.process_detail);
    }
    f
}

impl ProxyContext {
    /// Turns what was peeked into a request for the PDP; an invalid host
    /// is a refusal.
    pub fn request(&self, peeked: &PeekedHost, peer: Option<SocketAddr>) -> Result<ConnectionRequest, Refusal> {
        let host = normalize_host(&peeked.host).map_err(|error| Refusal::InvalidHost {
            host: peeked.host.clone(),
            error,
        })?;
        Ok(ConnectionRequest {
            host,
            port: peeked.port,
            via: peeked.via,
            peer,
            pid: None,
            exe: None,
            process_detail: None,
        })
    }

    /// The process behind a client connection (`client` = the client's
    /// address, `server` = the address the client connected to).
    pub fn attribute(&self, client: Option<SocketAddr>, server: Option<SocketAddr>) -> Process {
        match (&self.attribution, client, server) {
            (Some(net), Some(c), Some(s)) => net.tcp(c, s),
            _ => Process::default(),
        }
    }

    /// [`ProxyContext::attribute`] on the blocking pool: the lookup reads
    /// `/proc`, which must not stall the runtime's worker threads.
    pub async fn attribute_off_thread(&self, client: Option<SocketAddr>, server: Option<SocketAddr>) -> Process {
        let Some(net) = self.attribution.clone() else {
            return Process::default();
        };
        let (Some(c), Some(s)) = (client, server) else {
            return Process::default();
        };
        tokio::task::spawn_blocking(move || net.tcp(c, s))
            .await
            .unwrap_or_default()
    }

    /// Asks the PDP, fail-closed: an error, a panic or an answer later than
    /// `pdp_timeout` is a refusal; only `Allow` returns `Ok`. While the
    /// audit log is failing, nothing is allowed.
    pub fn decide(&self, req: &ConnectionRequest) -> Result<Ruling, Refusal> {
        self.audit_available()?;
        let (answer, took) = ask(&*self.pdp, req);
        if let Some(stats) = &self.stats {
            stats.pdp(took);
        }
        if took > self.config.pdp_timeout {
            return Err(Refusal::Pdp(PdpError::Timeout));
        }
        settle(answer)
    }

    /// [`ProxyContext::decide`] on the blocking pool, so that a PDP that
    /// stalls is a refusal soon after `pdp_timeout` (it keeps its thread,
    /// not a runtime worker: other connections go on being served) and one
    /// that panics is a refusal too. The PDP is judged by its own time:
    /// waiting for a thread and being woken afterwards, slow on a busy
    /// machine, are not counted against it (but bounded).
    pub async fn decide_in_time(&self, req: &ConnectionRequest) -> Result<Ruling, Refusal> {
        self.audit_available()?;
        if !self.pdp.may_block() {
            return self.decide(req);
        }
        let pdp = Arc::clone(&self.pdp);
        let owned = req.clone();
        let limit = self.config.pdp_timeout;
        let (started, on_start) = tokio::sync::oneshot::channel();
        let stats = self.stats.clone();
        let call = tokio::task::spawn_blocking(move || {
            let _ = started.send(());
            let (answer, took) = ask(&*pdp, &owned);
            // Counted when the call ends, also a stalled one's, late.
            if let Some(stats) = &stats {
                stats.pdp(took);
            }
            (answer, took)
        });
        if tokio::time::timeout(PDP_QUEUE_LIMIT, on_start).await.is_err() {
            return Err(Refusal::Pdp(PdpError::Timeout));
        }
        let answer = match tokio::time::timeout(limit + PDP_WAKE_SLACK, call).await {
            Ok(Ok((answer, took))) if took <= limit => answer,
            Ok(Ok(_)) | Err(_) => Err(PdpError::Timeout),
            Ok(Err(_)) => Err(PdpError::Panicked),
        };
        settle(answer)
    }

    /// [`ProxyContext::decide_in_time`], holding an `Escalate` ruling until a
    /// person answers through the escalation broker: approved is `Ok` (the
    /// reason says who approved), denied, unanswered in time or without a
    /// broker is a refusal that stays `escalate` in the audit log. A client
    /// that closes its connection meanwhile withdraws the request.
    pub async fn decide_held(
        &self,
        req: &ConnectionRequest,
        client: &tokio::net::TcpStream,
    ) -> Result<Ruling, Refusal> {
        let asked = match self.decide_in_time(req).await {
            Err(Refusal::Policy(r)) if r.decision == Decision::Escalate => r,
            other => return other,
        };
        let escalate = |reason| {
            Err(Refusal::Policy(Ruling {
                decision: Decision::Escalate,
                reason,
            }))
        };
        let Some(broker) = &self.escalation else {
            return escalate(format!(
                "escalated, but no approver is configured; refusing ({})",
                asked.reason
            ));
        };
        let answer = tokio::select! {
            answer = broker.ask(req, &asked.reason) => answer,
            () = client_gone(client) => {
                return escalate(format!(
                    "escalated, but the client closed the connection before a person answered ({})",
                    asked.reason
                ));
            }
        };
        let reason = answer.describe(&asked.reason);
        if answer.is_approved() {
            Ok(Ruling {
                decision: Decision::Allow,
                reason,
            })
        } else {
            escalate(reason)
        }
    }

    /// Appends one entry; a failure (or a writer that does not answer in
    /// time) is `AuditUnavailable`, which callers turn into a refusal.
    pub async fn record(&self, finding: AuditFinding) -> Result<(), Refusal> {
        if let Some(stats) = &self.stats {
            stats.decision(&finding);
        }
        let ok = match tokio::time::timeout(AUDIT_TIMEOUT, self.audit.append(finding)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "audit append failed; refusing");
                false
            }
            Err(_) => false,
        };
        self.audit_down.store(!ok, Ordering::Relaxed);
        if ok { Ok(()) } else { Err(Refusal::AuditUnavailable) }
    }

    /// Refuses early while the audit log is known to be failing.
    pub fn audit_available(&self) -> Result<(), Refusal> {
        if self.audit_down.load(Ordering::Relaxed) {
            Err(Refusal::AuditUnavailable)
        } else {
            Ok(())
        }
    }

    /// Records a refusal (its one audit entry), then, under a flood of
    /// refusals, waits a little before the caller answers (see
    /// [`crate::pace`]).
    pub async fn record_refusal(
        &self,
        peeked: Option<&PeekedHost>,
        req: Option<&ConnectionRequest>,
        refusal: &Refusal,
        status: Option<u16>,
    ) {
        let reason = refusal.to_string();
        let mut f = match peeked {
            Some(p) => egress_finding(p, req, refusal.verdict(), &reason),
            None => AuditFinding::new(Kind::Egress, refusal.verdict(), one_line(&reason)),
        };
        f.status = status;
        self.count_refusal(refusal.class());
        // A refusal is sent whether or not it could be recorded: the
        // failure is already logged by the writer, once per episode.
        let _ = self.record(f).await;
        self.pacer.pace().await;
    }

    /// Records an allowed connection or request; `Err` means refuse.
    pub async fn record_allow(
        &self,
        peeked: &PeekedHost,
        req: &ConnectionRequest,
        ruling: &Ruling,
    ) -> Result<(), Refusal> {
        self.pacer.note_allowed();
        let recorded = self
            .record(egress_finding(peeked, Some(req), Verdict::Allow, &ruling.reason))
            .await;
        if recorded.is_err() {
            self.count_refusal(RefusalClass::AuditUnavailable);
        }
        recorded
    }

    /// Sends the client bytes already read while peeking to the upstream
    /// (they count as relayed); `false` when that write fails.
    pub(crate) async fn send_peeked(&self, peeked: &[u8], upstream: &mut tokio::net::TcpStream) -> bool {
        if peeked.is_empty() {
            return true;
        }
        if crate::conn::write_all(upstream, peeked, self.config.idle_timeout)
            .await
            .is_err()
        {
            return false;
        }
        if let Some(stats) = &self.stats {
            stats.relayed(crate::stats::Direction::Up, peeked.len() as u64);
        }
        true
    }

    /// Counts one refusal (with `[metrics]`).
    pub fn count_refusal(&self, class: RefusalClass) {
        if let Some(stats) = &self.stats {
            stats.refusal(class);
        }
    }

    /// Counts a tunnel as open while the returned guard lives (with
    /// `[metrics]`).
    pub fn count_tunnel(&self) -> Option<crate::stats::TunnelGuard<'_>> {
        self.stats.as_deref().map(ProxyStats::tunnel)
    }
}
