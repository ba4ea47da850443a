//! The proxy's own resolution of allowed names, and destination safety:
//! the `[dns] hosts` table first, then the upstream resolvers; every address
//! is vetted against the special-purpose ranges, and the proxy connects only
//! to an address it vetted (no second lookup, so DNS rebinding cannot move
//! the connection).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use secureops_policy::{Host, PrivateDestinations, vet};
use tokio::net::TcpStream;

use crate::episode::Episode;
use crate::refusal::Refusal;

/// Resolves and vets destinations.
#[derive(Clone)]
pub struct Resolver {
    hosts: HashMap<String, Vec<IpAddr>>,
    dns: Option<TokioResolver>,
    private: PrivateDestinations,
    /// Overall deadline of one lookup (all servers, all attempts).
    timeout: Duration,
    /// Upstreams that time out are logged once per episode.
    failing: Arc<Episode>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("hosts", &self.hosts)
            .field("upstream", &self.dns.is_some())
            .finish()
    }
}

/// The resolver could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot build resolver: {0}")]
pub struct ResolverError(String);

impl Resolver {
    /// Builds a resolver: `hosts` keys must already be normalised names;
    /// `upstream` are the DNS servers used for names not in `hosts` (none:
    /// such names fail to resolve).
    pub fn new(
        hosts: HashMap<String, Vec<IpAddr>>,
        upstream: &[SocketAddr],
        private: PrivateDestinations,
        timeout: Duration,
    ) -> Result<Self, ResolverError> {
        let dns = if upstream.is_empty() {
            None
        } else {
            let servers = upstream
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut opts = ResolverOpts::default();
            opts.timeout = timeout;
            opts.attempts = 2;
            // Names are fully qualified: never append search domains.
            opts.ndots = 0;
            // Only the documented sources: `[dns] hosts`, then upstream.
            opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
            let mut builder = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            );
            *builder.options_mut() = opts;
            Some(builder.build().map_err(|e| ResolverError(e.to_string()))?)
        };
        Ok(Self {
            hosts,
            dns,
            private,
            timeout,
            failing: Arc::default(),
        })
    }

    /// The static `[dns] hosts` answer for a normalised name, if any.
    pub fn static_answer(&self, name: &str) -> Option<&[IpAddr]> {
        self.hosts.get(name).map(Vec::as_slice)
    }

    /// Resolves `host` and returns the vetted socket addresses to try, in
    /// order. Addresses outside the globally reachable space are dropped
    /// unless `private_destinations` lists them; none left is a refusal.
    pub async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let ips: Vec<IpAddr> = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => match self.hosts.get(name) {
                Some(ips) => ips.clone(),
                None => self.lookup(name).await?,
            },
        };
        let mut first_unsafe = None;
        let vetted: Vec<SocketAddr> = ips
            .into_iter()
            .filter(|&ip| match vet(ip, &self.private) {
                Ok(()) => true,
                Err(e) => {
                    first_unsafe.get_or_insert(e);
                    false
                }
            })
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        match (vetted.is_empty(), first_unsafe) {
            (false, _) => Ok(vetted),
            (true, Some(e)) => Err(Refusal::Unsafe(e)),
            (true, None) => Err(Refusal::Unresolvable(format!("{host}: no addresses"))),
        }
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, Refusal> {
        let Some(dns) = &self.dns else {
            return Err(Refusal::Unresolvable(format!(
                "{name}: no upstream resolver configured"
            )));
        };
        // Trailing dot: the name is absolute, never subject to search lists.
        let Ok(answer) = tokio::time::timeout(self.timeout, dns.lookup_ip(format!("{name}."))).await else {
            self.failing.failed(|| {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "the proxy's resolver: upstream lookups time out; allowed names cannot be reached"
                );
            });
            return Err(Refusal::Unresolvable(format!("{name}: lookup timed out")));
        };
        self.failing
            .worked(|| tracing::info!("the proxy's resolver: upstream lookups answer again"));
        let answer = answer.map_err(|e| Refusal::Unresolvable(format!("{name}: {e}")))?;
        Ok(answer.iter().collect())
    }
}

/// Connects to the first reachable vetted address within `timeout` overall.
pub async fn connect(addrs: &[SocketAddr], timeout: Duration, label: &str) -> Result<TcpStream, Refusal> {
    let attempt = async {
        let mut last = None;
        for addr in addrs {
            match crate::local_hop::connect(*addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Refusal::Unreachable(match last {
            Some(e) => format!("{label}: {e}"),
            None => label.to_owned(),
        }))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(Refusal::ConnectTimeout(label.to_owned())))
}
