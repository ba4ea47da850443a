//! # The DNS sinkhole: the agent's only resolver
//!
//! A name the agent cannot resolve is a name it cannot reach, and a query
//! is itself an exfiltration channel (`c2VjcmV0.attacker.example`). The
//! sinkhole answers allowed names and swallows everything else before a
//! single packet leaves the machine. Same policy as the proxy (PRODUCT.md
//! B.3: a name resolves when any name rule names it or a wildcard covers
//! it, whatever the port), same audit log (one `dns` entry per query).
//!
//! | step | module | what it does |
//! |---|---|---|
//! | accept | `udp`, `tcp` | UDP datagrams and TCP (length-prefixed) on one address; per-client rate limit (`limit`) before decoding |
//! | check | `answer` | hickory-proto decodes; one question, no records, EDNS 0; FORMERR/NOTIMP/REFUSED otherwise |
//! | decide | `engine` | private-range PTR answered locally; the allowlist on the normalised name; denied → the sinkhole answer |
//! | answer | `answer`, `cache`, `forward` | `[dns] hosts`, else the TTL cache, else the upstreams (raw bytes, UDP then TCP on TC, timeout and retry over the list) |
//! | vet | `answer` | every A/AAAA (and SVCB/HTTPS hint) of an answer must be globally reachable or in `private_destinations` (rebinding guard) |
//! | audit | `engine` | one entry per query before the answer is sent; over-limit floods are summarised per client |
//!
//! Build one with [`DnsSinkhole::bind`] (the `[dns] listen` address, UDP
//! and TCP on the same port) or [`DnsSinkhole::from_std`] (sockets created
//! elsewhere, e.g. inside the agent's network namespace), then
//! [`DnsSinkhole::run`] until cancelled.

mod answer;
mod attribute;
mod cache;
mod engine;
mod forward;
/// The query path without sockets, for the fuzz target; not a stable API.
#[doc(hidden)]
pub mod fuzz;
mod limit;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use secureops_audit::AuditLog;
use secureops_policy::{Allowlist, Mode, PrivateDestinations};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use answer::SinkholeMode;

use crate::dns::engine::Engine;

/// `[dns]` settings of the sinkhole.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP and TCP listen address (`[dns] listen`); port 0 picks one port
    /// for both.
    pub listen: SocketAddr,
    /// Upstream resolvers for allowed names, tried in order.
    pub upstream: Vec<SocketAddr>,
    /// The answer for names that are not let through.
    pub sinkhole: SinkholeMode,
    /// Static answers (`[dns] hosts`), keys already normalised.
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// Longest wait for one upstream attempt.
    pub upstream_timeout: Duration,
    /// Queries per second per client IP (token bucket); 0 = unlimited.
    pub client_rate: u32,
    /// Burst size of that bucket.
    pub client_burst: u32,
    /// Most cached answers; 0 disables the cache.
    pub cache_entries: usize,
    /// About how much memory the cache may take, in bytes.
    pub cache_bytes: usize,
    /// Queries answered at once; beyond it the listener stops reading
    /// (the kernel queues, then drops).
    pub max_in_flight: usize,
    /// TCP connections open at once; more are closed on accept.
    pub max_tcp_connections: usize,
    /// A TCP client silent this long (before or between queries) is cut off.
    pub tcp_idle_timeout: Duration,
    /// On shutdown, how long queries in flight may finish.
    pub drain_timeout: Duration,
    /// Threads of the sinkhole's own runtime (separate from the proxy's, so
    /// a DNS flood cannot take the proxy's threads); 1 = a single-threaded
    /// event loop.
    pub threads: usize,
    /// Counters for metrics (`None`: nothing is counted).
    pub stats: Option<Arc<crate::stats::ProxyStats>>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5354)),
            upstream: Vec::new(),
            sinkhole: SinkholeMode::Nxdomain,
            hosts: HashMap::new(),
            upstream_timeout: Duration::from_millis(2000),
            client_rate: 1000,
            client_burst: 2000,
            cache_entries: 10_000,
            cache_bytes: 32 << 20,
            max_in_flight: 4096,
            max_tcp_connections: 256,
            tcp_idle_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            stats: None,
        }
    }
}

/// How a query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A UDP datagram.
    Udp,
    /// A length-prefixed message on a TCP connection.
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// Tells which process sent a query, where the platform can (the audit
/// entry's `pid` and `exe`; `null` when this is absent or answers `None`).
pub trait PeerAttribution: Send + Sync {
    /// `(pid, exe)` of the process owning the client socket `peer` that
    /// sent to our socket `local`.
    fn attribute(&self, transport: Transport, peer: SocketAddr, local: SocketAddr) -> Option<(u32, Option<String>)>;
}

/// The policy the sinkhole enforces.
#[derive(Clone, Default)]
pub struct DnsPolicy {
    /// The egress allowlist; its name rules decide ([`Allowlist::resolves`]).
    pub allowlist: Allowlist,
    /// Non-global ranges that answers may still point into.
    pub private: PrivateDestinations,
    /// Process attribution for audit entries, if the platform has one.
    pub attribution: Option<Arc<dyn PeerAttribution>>,
    /// What happens to a name no rule covers (`run --learn`: it resolves,
    /// recorded as learned; answers are still vetted).
    pub mode: Mode,
}

impl std::fmt::Debug for DnsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsPolicy")
            .field("rules", &self.allowlist.len())
            .field("attribution", &self.attribution.is_some())
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The sinkhole could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// Binding or setting up a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The UDP and TCP sockets handed over are not on the same address.
    #[error("UDP socket on {udp} and TCP listener on {tcp}: they must share one address")]
    Mismatch {
        /// The UDP socket's address.
        udp: SocketAddr,
        /// The TCP listener's address.
        tcp: SocketAddr,
    },
}

/// The agent's resolver: answers allowed names on UDP and TCP, sinkholes
/// everything else, records every query.
///
/// It runs on its own runtime (`threads` threads; 1 is a single-threaded
/// event loop like dnsmasq's), so a DNS flood cannot take the proxy's
/// threads.
pub struct DnsSinkhole {
    udp: Arc<tokio::net::UdpSocket>,
    tcp: tokio::net::TcpListener,
    engine: Arc<Engine>,
    addr: SocketAddr,
    runtime: OwnRuntime,
}

/// The sinkhole's runtime. Dropping a runtime where blocking is not
/// allowed (inside another runtime, e.g. when the sinkhole is dropped
/// without being run) panics, so it is shut down in the background instead.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for DnsSinkhole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSinkhole")
            .field("addr", &self.addr)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// Attempts at finding a port free for both UDP and TCP when asked for 0.
const PORT_ATTEMPTS: usize = 16;
/// Receive buffer asked for the UDP socket: absorbs bursts while the
/// workers are busy (the kernel caps it at `net.core.rmem_max`).
const UDP_RECV_BUFFER: usize = 4 << 20;

impl DnsSinkhole {
    /// Binds UDP and TCP on `config.listen` (with port 0: one free port for
    /// both) and builds the sinkhole.
    ///
    /// # Errors
    /// [`DnsError::Listen`] when the address cannot be bound.
    pub fn bind(config: DnsConfig, policy: DnsPolicy, audit: AuditLog) -> Result<Self, DnsError> {
        let addr = config.listen;
        let listen = |source| DnsError::Listen { addr, source };
        let attempts = if addr.port() == 0 { PORT_ATTEMPTS } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let udp = std::net::UdpSocket::bind(addr).map_err(listen)?;
            let local = udp.local_addr().map_err(listen)?;
            match std::net::TcpListener::bind(local) {
                Ok(tcp) => return Self::from_std(udp, tcp, config, policy, audit),
                // The UDP port's TCP twin is taken: try another port.
                Err(e) => last = Some(e),
            }
        }
        Err(listen(last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into())))
    }

    /// Builds the sinkhole on sockets bound elsewhere (e.g. inside the
    /// agent's network namespace). They must share one address.
    ///
    /// # Errors
    /// [`DnsError::Mismatch`] when the addresses differ,
    /// [`DnsError::Listen`] when the sockets or the runtime cannot be set up.
    pub fn from_std(
        udp: std::net::UdpSocket,
        tcp: std::net::TcpListener,
        config: DnsConfig,
        policy: DnsPolicy,
        audit: AuditLog,
    ) -> Result<Self, DnsError> {
        let addr = config.listen;
        let listen = |source| DnsError::Listen { addr, source };
        let udp_addr = udp.local_addr().map_err(listen)?;
        let tcp_addr = tcp.local_addr().map_err(listen)?;
        if udp_addr != tcp_addr {
            return Err(DnsError::Mismatch {
                udp: udp_addr,
                tcp: tcp_addr,
            });
        }
        let listen = |source| DnsError::Listen { addr: udp_addr, source };
        udp.set_nonblocking(true).map_err(listen)?;
        tcp.set_nonblocking(true).map_err(listen)?;
        // Best effort: a small buffer only means earlier drops under load.
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(UDP_RECV_BUFFER);
        let runtime = match config.threads {
            0 | 1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        }
        .thread_name("secureops-dns")
        .enable_all()
        .build()
        .map_err(listen)?;
        // The sockets belong to the sinkhole's own runtime.
        let (udp, tcp) = {
            let _entered = runtime.enter();
            (
                tokio::net::UdpSocket::from_std(udp).map_err(listen)?,
                tokio::net::TcpListener::from_std(tcp).map_err(listen)?,
            )
        };
        let engine = Arc::new(Engine::new(config, policy, audit, udp_addr));
        Ok(Self {
            udp: Arc::new(udp),
            tcp,
            engine,
            addr: udp_addr,
            runtime: OwnRuntime(Some(runtime)),
        })
    }

    /// The address both listeners are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then stops reading, lets
    /// queries in flight finish for at most `drain_timeout`, and writes the
    /// last per-client summaries. The work happens on the sinkhole's own
    /// thread; this future only waits for it.
    pub async fn run(self, shutdown: CancellationToken) {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let Self {
            udp,
            tcp,
            engine,
            runtime,
            ..
        } = self;
        let thread = std::thread::Builder::new()
            .name("secureops-dns".to_owned())
            .spawn(move || {
                if let Some(rt) = &runtime.0 {
                    rt.block_on(serve(udp, tcp, engine, shutdown));
                }
                // Connections still open after the drain end with the runtime.
                drop(runtime);
                let _ = done.send(());
            });
        match thread {
            // Also resolves (with an error) if the thread dies.
            Ok(_) => _ = finished.await,
            Err(e) => tracing::error!(error = %e, "cannot start the DNS sinkhole thread"),
        }
    }
}

async fn serve(
    udp: Arc<tokio::net::UdpSocket>,
    tcp: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let udp = tracker.spawn(udp::serve(udp, Arc::clone(&engine), shutdown.clone(), tracker.clone()));
    let tcp = tracker.spawn(tcp::serve(tcp, Arc::clone(&engine), shutdown.clone(), tracker.clone()));
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => engine.report().await,
        }
    }
    let _ = udp.await;
    let _ = tcp.await;
    tracker.close();
    if tokio::time::timeout(engine.config.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!(open = tracker.len(), "dns drain timeout");
    }
    engine.report().await;
}

/// How often over-limit and dropped messages are summarised in the log.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The sinkhole's per-query work for `benches/dns.rs`; not a stable API.
#[doc(hidden)]
pub mod bench {
    use std::net::IpAddr;

    use super::SinkholeMode;
    use super::answer::{Parsed, addresses, encode, parse, sinkhole};

    /// Decodes and checks one query; `true` when it is a query to answer.
    pub fn decode(bytes: &[u8]) -> bool {
        matches!(parse(bytes), Parsed::Query(_))
    }

    /// Decode, then the NXDOMAIN sinkhole answer, encoded.
    pub fn sinkhole_answer(bytes: &[u8]) -> Option<Vec<u8>> {
        match parse(bytes) {
            Parsed::Query(q) => Some(encode(&sinkhole(&q, SinkholeMode::Nxdomain), q.udp_limit)),
            _ => None,
        }
    }

    /// Decode, then a `[dns] hosts` answer with `ips`, encoded.
    pub fn static_answer(bytes: &[u8], ips: &[IpAddr]) -> Option<Vec<u8>> {
        match parse(bytes) {
            Parsed::Query(q) => Some(encode(&addresses(&q, ips), q.udp_limit)),
            _ => None,
        }
    }
}
