//! The sinkhole's query path without sockets, for the fuzz target
//! (`fuzz/fuzz_targets/dns_query.rs`): decode → decide → answer, through
//! the same [`Engine`] the listeners use. Not a stable API.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use secureops_audit::{AuditFinding, AuditLog};

use crate::dns::answer::Parsed;
use crate::dns::engine::{Engine, Prepared};
use crate::dns::{DnsConfig, DnsPolicy, Transport};

/// The client every message comes from.
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

/// What the sinkhole did with one message.
#[derive(Debug)]
pub enum Handled {
    /// Decided and answered here: the audit entry, then these bytes.
    Answered {
        /// The entry the listener would append before answering.
        entry: Box<AuditFinding>,
        /// The answer sent once the entry is in the log.
        reply: Vec<u8>,
        /// The answer sent when the entry could not be written.
        unrecorded: Vec<u8>,
    },
    /// Not a query it serves: this error response (FORMERR, NOTIMP, ...).
    Rejected(Vec<u8>),
    /// No answer at all (a runt or a response).
    Dropped,
    /// An allowed name that only an upstream can answer.
    Forward,
}

/// A sinkhole engine with a fixed policy and no upstream.
pub struct LocalAnswers {
    engine: Engine,
}

impl std::fmt::Debug for LocalAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAnswers").finish_non_exhaustive()
    }
}

impl LocalAnswers {
    /// The engine for `config` (its `upstream` is ignored) and `policy`;
    /// `audit` is only held, never written.
    pub fn new(mut config: DnsConfig, policy: DnsPolicy, audit: AuditLog) -> Self {
        config.upstream.clear();
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);
        Self {
            engine: Engine::new(config, policy, audit, local),
        }
    }

    /// Handles one message as the listener for `transport` would.
    pub fn handle(&self, bytes: &[u8], transport: Transport) -> Handled {
        match self.engine.prepare(bytes, CLIENT, transport) {
            Prepared::Local(entry, answer) => {
                let reply = answer.into_bytes(true);
                // Rebuilt: `into_bytes` consumes the answer.
                let unrecorded = match self.engine.prepare(bytes, CLIENT, transport) {
                    Prepared::Local(_, answer) => answer.into_bytes(false),
                    _ => Vec::new(),
                };
                Handled::Answered {
                    entry: Box::new(entry),
                    reply,
                    unrecorded,
                }
            }
            Prepared::Drop => Handled::Dropped,
            Prepared::Async(parsed) => match *parsed {
                Parsed::Reject { response, .. } => Handled::Rejected(response),
                Parsed::Drop(_) => Handled::Dropped,
                Parsed::Query(_) => Handled::Forward,
            },
        }
    }
}
