//! Learning the destination without breaking TLS: the CONNECT line, the
//! absolute-form URL, the TLS ClientHello SNI or the HTTP `Host` header.

pub mod http_head;
pub mod target;
pub mod tls_sni;

use secureops_audit::Via;

/// What the proxy peeked off the wire to identify the destination, without
/// interception (PRODUCT.md B.5 step 2): the host as the client wrote it,
/// the port, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedHost {
    /// The host exactly as sent (normalised later, so a malformed host can
    /// still be quoted in the refusal and the audit entry).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Where the host was read.
    pub via: Via,
}
