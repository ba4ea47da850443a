//! # secureops-proxy — the egress enforcement point
//!
//! All outbound agent traffic goes through this crate: a local forward
//! proxy that asks the policy decision point about every connection before
//! a single byte leaves the machine, and records each decision in the signed
//! audit log. The data path reads in module order:
//!
//! | step | module | what it does |
//! |---|---|---|
//! | accept | [`server`] | listener, `max_connections`, graceful shutdown |
//! | peek | [`peek`] | CONNECT line, absolute-form URL, TLS SNI — no interception |
//! | decide | [`decision`], [`context`], [`context_pdp`] | PDP call (allowlist + process context: taint from [`credwatch`], rules by executable), fail-closed on error, panic or timeout |
//! | hold | [`escalation`] | an `Escalate` ruling waits for a person (`secureops approve`/`deny`); no answer in time is a refusal |
//! | vet | [`resolve`] | own resolution, special-purpose ranges refused, connect to the vetted address |
//! | audit | [`context`] | one entry per decision, before any byte is relayed or a refusal sent |
//! | relay | `tunnel`, `http`, [`relay`] | CONNECT tunnels (with the SNI check) and per-request HTTP forwarding |
//! | transparent | [`transparent`], [`attribution`] | redirected connections under `secureops run`: original destination, SNI / `Host` peek, process lookup |
//! | count | [`stats`], [`episode`] | lock-free counters for `/metrics` (only with `[metrics]`); failures logged once per episode |
//!
//! Every refusal is a [`Refusal`], which alone decides the status code
//! (403 policy, 400 malformed, 502/504 upstream, 503 overload) and the
//! one-line reason.
//!
//! Fail-closed is the contract (PRODUCT.md W0): [`FailMode::Closed`] is the
//! only mode.
#![forbid(unsafe_code)]

/// The environment variables through which tools find an HTTP proxy (both
/// cases: tools disagree on which they read).
pub const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
];

/// The variables that exempt destinations from the proxy.
pub const NO_PROXY_VARIABLES: [&str; 2] = ["NO_PROXY", "no_proxy"];

pub mod attribution;
mod conn;
pub mod context;
pub mod context_pdp;
pub mod credwatch;
pub mod decision;
pub mod dns;
pub mod episode;
pub mod escalation;
mod http;
pub mod local_hop;
pub mod pace;
pub mod peek;
pub mod procinfo;
pub mod refusal;
pub mod relay;
pub mod resolve;
pub mod server;
pub mod sockdiag;
pub mod stats;
pub mod transparent;
mod tunnel;

pub use context::{ProxyConfig, ProxyContext, egress_finding};
pub use context_pdp::{ContextPdp, ProcessRule};
pub use decision::{
    AllowlistPdp, ConnectionRequest, Decision, EnforcementTier, FailMode, PdpError, PolicyDecisionPoint, Ruling,
};
pub use dns::{DnsConfig, DnsError, DnsPolicy, DnsSinkhole, PeerAttribution, SinkholeMode, Transport};
pub use escalation::{Answer, Escalations, PendingRequest};
pub use peek::PeekedHost;
pub use refusal::Refusal;
pub use resolve::{Resolver, ResolverError};
pub use server::{EgressProxy, handle_connection};
pub use stats::ProxyStats;
pub use transparent::handle_transparent;
