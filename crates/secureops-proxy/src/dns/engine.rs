//! One query, start to end: check → decide → answer (static, cache or
//! upstream, with the rebinding guard) → audit → reply. Shared by the UDP
//! and TCP listeners.
//!
//! Audit order: the entry is appended once the outcome is known (so it can
//! say "rebinding guard" or "upstream timed out") and before the client
//! gets a byte. A denied query never leaves the machine, so its entry is
//! always written first. An allowed, uncached query reaches the upstream
//! before its entry lands; while the log is known to fail, nothing is
//! forwarded at all (fail-closed), and if the append fails the client gets
//! REFUSED instead of the upstream's answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::Name;
use secureops_audit::{Appended, AuditFinding, AuditLog, Kind, Verdict, Via};
use secureops_policy::{Allowlist, Host, Mode, PrivateDestinations, UnsafeDestination};

use crate::dns::answer::{
    self, NameError, Parsed, Query, Rejection, cache_ttl, encode, first_unsafe, fit, from_cache, local_reverse,
    private_reverse, response, sinkhole,
};
use crate::dns::attribute::Attributor;
use crate::dns::cache::{AnswerCache, Key};
use crate::dns::forward::{ForwardError, Forwarder};
use crate::dns::limit::{Limiter, Report};
use crate::dns::{DnsConfig, DnsPolicy, Transport};
use crate::stats::DnsAnswer;

/// Longest wait for the audit writer before the answer becomes a refusal.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened to one query: the audit verdict and reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Outcome {
    /// Allowed, answered from `[dns] hosts`.
    #[error("{rule}; answered from [dns] hosts")]
    Static {
        /// Why the name is allowed.
        rule: String,
    },
    /// Allowed, answered from the cache.
    #[error("{rule}; answered from cache")]
    Cached {
        /// Why the name is allowed.
        rule: String,
    },
    /// Allowed, answered by an upstream resolver.
    #[error("{rule}; answered by upstream {server}")]
    Forwarded {
        /// Why the name is allowed.
        rule: String,
        /// The upstream that answered.
        server: SocketAddr,
    },
    /// The reverse name of a non-global address: answered here, never
    /// forwarded.
    #[error("reverse lookup of {ip} ({range} range) answered locally")]
    LocalReverse {
        /// The address.
        ip: IpAddr,
        /// Its special-purpose range.
        range: &'static str,
    },
    /// No name rule covers the name.
    #[error("{name} {}", secureops_policy::learn::NOT_LISTED)]
    NotAllowed {
        /// The normalised name.
        name: String,
    },
    /// A name no rule can match.
    #[error("invalid query name {name:?}: {error}")]
    InvalidName {
        /// The name, escaped.
        name: String,
        /// What is wrong with it.
        error: NameError,
    },
    /// A `[dns] hosts` address that is not globally reachable.
    #[error("[dns] hosts answer refused: {0}")]
    UnsafeStatic(UnsafeDestination),
    /// The upstream answered with an address that is not globally
    /// reachable (DNS rebinding).
    #[error("upstream answer refused (rebinding guard): {0}")]
    Rebinding(UnsafeDestination),
    /// Allowed, but no upstream answered.
    #[error("{rule}; cannot resolve: {error}")]
    Upstream {
        /// Why the name is allowed.
        rule: String,
        /// What went wrong.
        error: ForwardError,
    },
    /// Not a query this server answers.
    #[error("{0}")]
    Rejected(Rejection),
    /// The audit log is failing: nothing is forwarded unrecorded.
    #[error("audit log unavailable; refusing (fail-closed)")]
    AuditUnavailable,
}

impl Outcome {
    /// The decision recorded in the audit log.
    /// The metrics class of the answer.
    fn answer_class(&self) -> DnsAnswer {
        match self {
            Outcome::Static { .. } => DnsAnswer::Hosts,
            Outcome::Cached { .. } => DnsAnswer::Cache,
            Outcome::Forwarded { .. } => DnsAnswer::Upstream,
            Outcome::LocalReverse { .. } => DnsAnswer::Local,
            Outcome::NotAllowed { .. }
            | Outcome::InvalidName { .. }
            | Outcome::UnsafeStatic(_)
            | Outcome::Rebinding(_) => DnsAnswer::Sinkhole,
            Outcome::Upstream { .. } => DnsAnswer::Servfail,
            Outcome::Rejected(_) => DnsAnswer::Rejected,
            Outcome::AuditUnavailable => DnsAnswer::AuditUnavailable,
        }
    }

    pub(crate) fn verdict(&self) -> Verdict {
        match self {
            Outcome::Static { .. }
            | Outcome::Cached { .. }
            | Outcome::Forwarded { .. }
            | Outcome::LocalReverse { .. } => Verdict::Allow,
            _ => Verdict::Deny,
        }
    }
}

/// The summary entry for what a client did that was not audited one by one.
#[derive(Debug, thiserror::Error)]
#[error(
    "client {ip}: {refused} queries refused over the [dns] client_rate limit, \
     {dropped} messages dropped (runts or responses); counted here, not logged one by one"
)]
struct Summary {
    ip: IpAddr,
    refused: u64,
    dropped: u64,
}

/// The answers of a decided query: which one the client gets depends on
/// whether its audit entry is in the log.
pub(crate) struct Answer {
    /// Sent once the entry is in the log.
    reply: Vec<u8>,
    /// For an allowed answer, the query and size limit to answer REFUSED
    /// with when the entry is not in the log (nothing let through goes
    /// unrecorded); built only then. `None` sends `reply` anyway (a refusal
    /// tells the client nothing).
    unrecorded: Option<(Box<Query>, u16)>,
}

impl Answer {
    /// The bytes for the client, given whether the entry is in the log.
    pub(crate) fn into_bytes(self, recorded: bool) -> Vec<u8> {
        match self.unrecorded {
            Some((q, limit)) if !recorded => encode(&response(&q, ResponseCode::Refused), limit),
            _ => self.reply,
        }
    }
}

/// What [`Engine::prepare`] made of a message.
pub(crate) enum Prepared {
    /// Decided and answered here: append the entry, then send the answer.
    Local(AuditFinding, Answer),
    /// Send nothing.
    Drop,
    /// Needs the upstream or a process lookup: [`Engine::answer_parsed`].
    Async(Box<Parsed>),
}

/// The answer before encoding.
enum Reply {
    /// Built here.
    Message(Message),
    /// An upstream's bytes, passed through, with their decoded form.
    Raw(Vec<u8>, Message),
}

impl Reply {
    fn rcode(&self) -> ResponseCode {
        match self {
            Reply::Message(m) | Reply::Raw(_, m) => m.metadata.response_code,
        }
    }
}

/// Everything a query needs, shared by all listener tasks.
pub(crate) struct Engine {
    pub(crate) config: DnsConfig,
    allowlist: Allowlist,
    mode: Mode,
    private: PrivateDestinations,
    reverse: HashMap<IpAddr, Vec<Name>>,
    cache: AnswerCache,
    pub(crate) limiter: Limiter,
    forwarder: Forwarder,
    audit: AuditLog,
    audit_down: AtomicBool,
    attribution: Attributor,
    local: SocketAddr,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(config: DnsConfig, policy: DnsPolicy, audit: AuditLog, local: SocketAddr) -> Self {
        let cache = AnswerCache::new(config.cache_entries, config.cache_bytes);
        let limiter = Limiter::new(config.client_rate, config.client_burst);
        // resolv.conf may name this very sinkhole: forwarding to it would loop.
        let upstream: Vec<SocketAddr> = config
            .upstream
            .iter()
            .copied()
            .filter(|&u| {
                let own = is_self(u, local);
                if own {
                    tracing::warn!(upstream = %u, "dns upstream is the sinkhole itself; skipped");
                }
                !own
            })
            .collect();
        let forwarder = Forwarder::new(upstream, config.upstream_timeout);
        Self {
            reverse: answer::reverse_map(&config.hosts),
            cache,
            limiter,
            forwarder,
            allowlist: policy.allowlist,
            mode: policy.mode,
            private: policy.private,
            attribution: Attributor::new(policy.attribution),
            audit,
            audit_down: AtomicBool::new(false),
            local,
            config,
        }
    }

    /// The cheap check on the receive path, before anything is decoded or
    /// spawned: `Ok(())` to answer, `Err(Some(bytes))` to send REFUSED at
    /// once (over the client's rate), `Err(None)` to drop.
    pub(crate) fn admit(&self, bytes: &[u8], peer: IpAddr) -> Result<(), Option<Vec<u8>>> {
        if self.limiter.admit(peer, Instant::now()) {
            Ok(())
        } else {
            let refused = answer::refused_header(bytes);
            self.count(if refused.is_some() {
                DnsAnswer::RateLimited
            } else {
                DnsAnswer::Dropped
            });
            Err(refused)
        }
    }

    /// Counts one message (with `[metrics]`).
    fn count(&self, answer: DnsAnswer) {
        if let Some(stats) = &self.config.stats {
            stats.dns(answer);
        }
    }

    /// Answers one message; `None` means send nothing.
    pub(crate) async fn answer(&self, bytes: &[u8], peer: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
        self.answer_parsed(answer::parse(bytes), bytes, peer, transport).await
    }

    /// Answers a query right here when nothing needs waiting for (no
    /// upstream, the client's process already known): the caller appends
    /// the entry and sends the answer (see [`Answer`]).
    pub(crate) fn prepare(&self, bytes: &[u8], peer: SocketAddr, transport: Transport) -> Prepared {
        let q = match answer::parse(bytes) {
            Parsed::Query(q) => q,
            Parsed::Drop(why) => {
                tracing::trace!(?why, %peer, "dns message dropped");
                self.limiter.note_dropped(peer.ip());
                self.count(DnsAnswer::Dropped);
                return Prepared::Drop;
            }
            other @ Parsed::Reject { .. } => return Prepared::Async(Box::new(other)),
        };
        let Some(who) = self.attribution.known(transport, peer) else {
            return Prepared::Async(Box::new(Parsed::Query(q)));
        };
        match self.resolve_local(&q) {
            Ok((outcome, reply)) => {
                let (finding, answer) = self.finish(q, &outcome, reply, who, peer, transport);
                Prepared::Local(finding, answer)
            }
            Err(_) => Prepared::Async(Box::new(Parsed::Query(q))),
        }
    }

    /// Answers a message [`Engine::prepare`] could not answer at once.
    pub(crate) async fn answer_parsed(
        &self,
        parsed: Parsed,
        bytes: &[u8],
        peer: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let q = match parsed {
            Parsed::Drop(why) => {
                tracing::trace!(?why, %peer, "dns message dropped");
                self.limiter.note_dropped(peer.ip());
                self.count(DnsAnswer::Dropped);
                return None;
            }
            Parsed::Reject {
                response,
                why,
                name,
                qtype,
            } => {
                let rcode = why.rcode();
                let who = self.attribution.lookup(transport, peer, self.local).await;
                let mut f = self.finding(&Outcome::Rejected(why), peer, transport, rcode, who);
                f.host = name;
                f.qtype = qtype.map(|t| t.to_string());
                // An error code tells the client nothing: sent even when
                // the entry could not be written.
                self.record(f).await;
                return Some(response);
            }
            Parsed::Query(q) => q,
        };
        // The process lookup runs while the query is answered.
        let ((outcome, reply), who) = tokio::join!(
            self.resolve(&q, bytes),
            self.attribution.lookup(transport, peer, self.local)
        );
        let (finding, answer) = self.finish(q, &outcome, reply, who, peer, transport);
        let recorded = self.record(finding).await;
        Some(answer.into_bytes(recorded))
    }

    /// The entry and the answers of a decided query.
    fn finish(
        &self,
        q: Box<Query>,
        outcome: &Outcome,
        reply: Reply,
        who: Option<(u32, Option<String>)>,
        peer: SocketAddr,
        transport: Transport,
    ) -> (AuditFinding, Answer) {
        let limit = match transport {
            Transport::Udp => q.udp_limit,
            Transport::Tcp => u16::MAX,
        };
        let mut f = self.finding(outcome, peer, transport, reply.rcode(), who);
        f.host = Some(q.display_name());
        // Case is data too (base64 labels): keep the name as sent. Only
        // valid names get here unescaped, so `to_ascii` adds no escapes.
        if q.name.is_ok()
            && q.qname.iter().any(|label| label.iter().any(u8::is_ascii_uppercase))
            && let Some(detail) = &mut f.detail
        {
            detail.push_str("; name as sent ");
            detail.push_str(q.qname.to_ascii().trim_end_matches('.'));
        }
        f.qtype = Some(q.qtype.to_string());
        let reply = match reply {
            Reply::Message(m) => encode(&m, limit),
            Reply::Raw(raw, m) => fit(raw, &m, limit),
        };
        let unrecorded = (outcome.verdict() == Verdict::Allow).then_some((q, limit));
        (f, Answer { reply, unrecorded })
    }

    /// The decision and the answer for a checked query.
    async fn resolve(&self, q: &Query, bytes: &[u8]) -> (Outcome, Reply) {
        let key = match self.resolve_local(q) {
            Ok(done) => return done,
            Err(key) => key,
        };
        let rule = self.rule_for(&key.name);
        if self.audit_down.load(Ordering::Relaxed) {
            return (
                Outcome::AuditUnavailable,
                Reply::Message(response(q, ResponseCode::Refused)),
            );
        }
        match self.forwarder.forward(bytes, q).await {
            Err(error) => (
                Outcome::Upstream { rule, error },
                Reply::Message(response(q, ResponseCode::ServFail)),
            ),
            Ok(f) => {
                if let Some(e) = first_unsafe(&f.message, &self.private) {
                    return (Outcome::Rebinding(e), Reply::Message(sinkhole(q, self.config.sinkhole)));
                }
                if let Some(ttl) = cache_ttl(&f.message) {
                    self.cache.insert(key, f.message.clone(), ttl, f.raw.len());
                }
                let server = f.server;
                (Outcome::Forwarded { rule, server }, Reply::Raw(f.raw, f.message))
            }
        }
    }

    /// The decision and the answer when they need no upstream; otherwise
    /// the cache key of an allowed name to forward.
    fn resolve_local(&self, q: &Query) -> Result<(Outcome, Reply), Key> {
        let sink = || Reply::Message(sinkhole(q, self.config.sinkhole));
        if let Some((ip, range)) = private_reverse(&q.qname) {
            let names = self.reverse.get(&ip.to_canonical()).map(Vec::as_slice);
            return Ok((
                Outcome::LocalReverse { ip, range },
                Reply::Message(local_reverse(q, names)),
            ));
        }
        let name = match &q.name {
            Ok(name) => name,
            Err(error) => {
                let outcome = Outcome::InvalidName {
                    name: q.display_name(),
                    error: error.clone(),
                };
                return Ok((outcome, sink()));
            }
        };
        // Learn mode lets an unlisted name resolve; its answer is vetted
        // below like any other.
        if self.mode == Mode::Enforce && !self.allowlist.resolves(name) {
            return Ok((Outcome::NotAllowed { name: name.clone() }, sink()));
        }
        if let Some(ips) = self.config.hosts.get(name) {
            let reply = answer::addresses(q, ips);
            // Only what would be handed out is vetted: an A answer is not
            // refused for the name's IPv6 address.
            if let Some(e) = first_unsafe(&reply, &self.private) {
                return Ok((Outcome::UnsafeStatic(e), sink()));
            }
            let rule = self.rule_for(name);
            return Ok((Outcome::Static { rule }, Reply::Message(reply)));
        }
        let key = Key {
            name: name.as_str().into(),
            qtype: q.qtype,
            qclass: q.qclass,
            dnssec_ok: q.dnssec_ok,
            checking_disabled: q.message.metadata.checking_disabled,
        };
        if let Some(entry) = self.cache.get(&key)
            && let Some(age) = entry.age(Instant::now())
        {
            let rule = self.rule_for(name);
            return Ok((
                Outcome::Cached { rule },
                Reply::Message(from_cache(q, &entry.message, age)),
            ));
        }
        Err(key)
    }

    /// The rule to quote for an allowed name (ports 443 and 80 first), or
    /// the `learn:` reason of a name only learn mode lets through.
    fn rule_for(&self, name: &str) -> String {
        if self.mode == Mode::Learn
            && !self.allowlist.resolves(name)
            && let Ok(learned) = self.mode.unlisted(name)
        {
            return learned;
        }
        let host = Host::Name(name.to_owned());
        match self
            .allowlist
            .find(&host, 443)
            .or_else(|| self.allowlist.find(&host, 80))
        {
            Some(rule) => format!("allowed by rule \"{rule}\""),
            None => "allowed by a name rule".to_owned(),
        }
    }

    fn finding(
        &self,
        outcome: &Outcome,
        peer: SocketAddr,
        transport: Transport,
        rcode: ResponseCode,
        who: Option<(u32, Option<String>)>,
    ) -> AuditFinding {
        // Every part of a reason is normalised, escaped or made one line
        // where it is built, so the text goes in as it is.
        let mut f = AuditFinding::new(Kind::Dns, outcome.verdict(), outcome.to_string());
        f.via = Some(Via::Dns);
        if let Some(stats) = &self.config.stats {
            stats.dns(outcome.answer_class());
            stats.decision(&f);
        }
        if let Some((pid, exe)) = who {
            f.pid = Some(pid);
            f.exe = exe;
        }
        f.detail = Some(format!("{transport} from {peer}; answer {}", rcode_name(rcode)));
        f
    }

    /// Appends one entry; `false` when it is not in the log.
    pub(crate) async fn record(&self, finding: AuditFinding) -> bool {
        let ok = matches!(
            tokio::time::timeout(AUDIT_TIMEOUT, self.audit.append(finding)).await,
            Ok(Ok(_))
        );
        self.audit_down.store(!ok, Ordering::Relaxed);
        ok
    }

    /// Appends the entries of [`Prepared::Local`] answers as one group on this thread
    /// when the log's writer is free (see [`AuditLog::try_append_now`]):
    /// whether each is in the log, or `None` to use [`Engine::record`].
    /// Drop the [`Appended`] (when there is one) after sending the answers.
    ///
    /// A panic in the commit (a bug; the log then refuses everything) must
    /// not take the UDP reader down with it: it counts as not recorded.
    pub(crate) fn record_now(&self, findings: &[AuditFinding]) -> Option<(Vec<bool>, Option<Appended>)> {
        let appended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.audit.try_append_now(findings)));
        let (recorded, appended): (Vec<bool>, _) = match appended {
            Ok(appended) => {
                let appended = appended?;
                (appended.iter().map(Result::is_ok).collect(), Some(appended))
            }
            Err(_) => {
                tracing::error!("audit append panicked; answering as unrecorded");
                (vec![false; findings.len()], None)
            }
        };
        self.audit_down.store(recorded.contains(&false), Ordering::Relaxed);
        Some((recorded, appended))
    }

    /// Writes one summary entry per client that was refused or dropped
    /// since the last call.
    pub(crate) async fn report(&self) {
        for Report { ip, refused, dropped } in self.limiter.take_reports() {
            let summary = Summary { ip, refused, dropped };
            let mut f = AuditFinding::new(Kind::Dns, Verdict::Deny, summary.to_string());
            f.via = Some(Via::Dns);
            f.detail = Some(format!("client {ip}"));
            self.record(f).await;
        }
    }
}

/// True when `upstream` is the sinkhole's own address `local` (directly,
/// or through a wildcard or loopback address on the same port).
fn is_self(upstream: SocketAddr, local: SocketAddr) -> bool {
    let (u, l) = (upstream.ip().to_canonical(), local.ip().to_canonical());
    upstream.port() == local.port()
        && (u == l
            || (l.is_unspecified() && (u.is_loopback() || u.is_unspecified()))
            || (u.is_loopback() && l.is_loopback()))
}

/// The RFC name of a response code (`NOERROR`, `NXDOMAIN`, ...).
fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}

#[cfg(test)]
pub(crate) mod tests;
