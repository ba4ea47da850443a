//! Forwarding an allowed query to the upstream resolvers, as raw bytes so
//! EDNS and flags reach the upstream as the client sent them.
//!
//! Each attempt uses its own connected ephemeral UDP socket and a fresh
//! random ID; only an answer with that ID and the same question counts
//! (anything else is ignored until the timeout). A truncated answer is
//! retried over TCP with the same server. Servers are tried in order; a
//! SERVFAIL/REFUSED/NOTIMP/FORMERR answer moves on to the next one.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::dns::answer::Query;

/// Largest answer read from an upstream (the DNS maximum).
const MAX_ANSWER: usize = 65_535;

/// Why no usable upstream answer came back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ForwardError {
    /// `[dns] upstream` is empty.
    #[error("no upstream resolver configured")]
    NoUpstream,
    /// No matching answer in time.
    #[error("upstream {0} did not answer within {1} ms")]
    Timeout(SocketAddr, u128),
    /// A socket error.
    #[error("upstream {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    /// The random source failed (no ID, no query).
    #[error("no random query ID: {0}")]
    Random(String),
}

/// A matching upstream answer.
#[derive(Debug)]
pub(crate) struct Forwarded {
    /// Its bytes, with the client's ID put back.
    pub raw: Vec<u8>,
    /// Decoded.
    pub message: Message,
    /// The server that gave it.
    pub server: SocketAddr,
}

/// The upstream resolvers and the per-attempt timeout.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    /// No upstream answering is logged once per episode.
    failing: std::sync::Arc<crate::episode::Episode>,
}

impl Forwarder {
    /// Tries `servers` in order, each attempt bounded by `timeout`.
    pub(crate) fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self {
            servers,
            timeout,
            failing: Default::default(),
        }
    }

    /// Sends `query` (the client's bytes, already checked) to the upstreams
    /// and returns the first usable answer. An upstream error code is
    /// returned as an answer when no server did better.
    pub(crate) async fn forward(&self, query: &[u8], q: &Query) -> Result<Forwarded, ForwardError> {
        let answer = self.try_servers(query, q).await;
        match &answer {
            Err(e @ (ForwardError::Timeout(..) | ForwardError::Io(..))) => self.failing.failed(|| {
                tracing::warn!(error = %e, "DNS sinkhole: no upstream resolver answers; allowed names get SERVFAIL");
            }),
            Err(_) => {}
            Ok(_) => self
                .failing
                .worked(|| tracing::info!("DNS sinkhole: upstream resolvers answer again")),
        }
        answer
    }

    async fn try_servers(&self, query: &[u8], q: &Query) -> Result<Forwarded, ForwardError> {
        let mut last_error = ForwardError::NoUpstream;
        let mut fallback = None;
        for &server in &self.servers {
            let answer = match self.udp(server, query, q).await {
                Ok(a) if a.message.metadata.truncation => self.tcp(server, query, q).await,
                other => other,
            };
            match answer {
                Ok(a) if retry_elsewhere(a.message.metadata.response_code) => {
                    fallback.get_or_insert(a);
                }
                Ok(a) => return Ok(a),
                Err(e) => last_error = e,
            }
        }
        fallback.ok_or(last_error)
    }

    async fn udp(&self, server: SocketAddr, query: &[u8], q: &Query) -> Result<Forwarded, ForwardError> {
        let io = |e| ForwardError::Io(server, e);
        let deadline = Instant::now() + self.timeout;
        let (id, packet) = with_random_id(query)?;
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        // Connected: the kernel drops datagrams from any other address.
        socket.connect(server).await.map_err(io)?;
        socket.send(&packet).await.map_err(io)?;
        let mut buf = vec![0u8; MAX_ANSWER];
        loop {
            let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
                Ok(r) => r.map_err(io)?,
                Err(_) => return Err(ForwardError::Timeout(server, self.timeout.as_millis())),
            };
            let Some(bytes) = buf.get(..n) else { continue };
            if let Some(answer) = matching(bytes, id, q, server) {
                return Ok(answer);
            }
        }
    }

    async fn tcp(&self, server: SocketAddr, query: &[u8], q: &Query) -> Result<Forwarded, ForwardError> {
        let io = |e| ForwardError::Io(server, e);
        let deadline = Instant::now() + self.timeout;
        let (id, packet) = with_random_id(query)?;
        let exchange = async {
            let mut stream = TcpStream::connect(server).await?;
            let _ = stream.set_nodelay(true);
            let len = u16::try_from(packet.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            let mut framed = Vec::with_capacity(packet.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&packet);
            stream.write_all(&framed).await?;
            let len = usize::from(stream.read_u16().await?);
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let bytes = match timeout_at(deadline, exchange).await {
            Ok(r) => r.map_err(io)?,
            Err(_) => return Err(ForwardError::Timeout(server, self.timeout.as_millis())),
        };
        matching(&bytes, id, q, server).ok_or_else(|| {
            ForwardError::Io(
                server,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "answer does not match the query"),
            )
        })
    }
}

/// Error codes after which another server may do better.
fn retry_elsewhere(rcode: ResponseCode) -> bool {
    matches!(
        rcode,
        ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp | ResponseCode::FormErr
    )
}

/// The query with a fresh random ID in place of the client's.
fn with_random_id(query: &[u8]) -> Result<(u16, Vec<u8>), ForwardError> {
    let id = getrandom::u32().map_err(|e| ForwardError::Random(e.to_string()))? as u16;
    let mut packet = query.to_vec();
    if let Some(head) = packet.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
    Ok((id, packet))
}

/// `bytes` when they are the answer to our query: our ID, a response to a
/// standard query, with the same question. The client's ID is put back.
fn matching(bytes: &[u8], id: u16, q: &Query, server: SocketAddr) -> Option<Forwarded> {
    let message = Message::from_vec(bytes).ok()?;
    let m = &message.metadata;
    if m.id != id || m.message_type != MessageType::Response || m.op_code != OpCode::Query {
        return None;
    }
    let question = message.queries.first()?;
    if message.queries.len() != 1
        || question.query_type() != q.qtype
        || question.query_class() != q.qclass
        || !question.name().eq_ignore_root(&q.qname)
    {
        return None;
    }
    let mut raw = bytes.to_vec();
    let client_id = q.message.metadata.id;
    if let Some(head) = raw.get_mut(..2) {
        head.copy_from_slice(&client_id.to_be_bytes());
    }
    let mut message = message;
    message.metadata.id = client_id;
    Some(Forwarded { raw, message, server })
}
