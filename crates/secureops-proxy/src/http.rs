//! Absolute-form plain HTTP (`GET http://host/path HTTP/1.1`): every
//! request on a keep-alive connection is decided and audited on its own,
//! forwarded in origin form with `Host` set to the URL's authority, and its
//! body framing checked so that one request cannot hide another.

use std::net::SocketAddr;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;

use crate::attribution::Process;
use crate::conn::{Conn, ReadHeadError, respond_and_close, write_all};
use crate::context::ProxyContext;
use crate::decision::{ConnectionRequest, host_port_host};
use crate::peek::PeekedHost;
use crate::peek::http_head::{BodyKind, Head, is_hop_by_hop, parse_response};
use crate::peek::target::http_destination;
use crate::refusal::Refusal;
use crate::resolve::connect;

/// Most body bytes sent in the same write as their head.
const COALESCE: usize = 16 * 1024;

/// An upstream connection kept for the next request to the same place.
#[derive(Debug)]
pub(crate) struct Upstream {
    host: secureops_policy::Host,
    port: u16,
    conn: Conn,
}

/// Whether the client connection stays open after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    KeepAlive,
    Close,
}

/// Where requests come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The explicit proxy: absolute-form requests, the URL names the host.
    Explicit,
    /// A redirected connection to `port`: origin-form requests, exactly one
    /// `Host` header names the host, decided again for every request.
    Transparent {
        /// The original destination port.
        port: u16,
    },
}

/// Handles one request whose head has been read.
pub(crate) async fn forward(
    ctx: &ProxyContext,
    client: &mut Conn,
    head: Head,
    cache: &mut Option<Upstream>,
    peer: Option<SocketAddr>,
    process: &Process,
    mode: Mode,
) -> Next {
    let transparent_port = match mode {
        Mode::Explicit => None,
        Mode::Transparent { port } => Some(port),
    };
    let (peeked, authority, path) = match http_destination(&head, transparent_port) {
        Ok(parts) => parts,
        Err(r) => return refuse(ctx, client, None, None, r).await,
    };
    let req = match ctx.request(&peeked, peer) {
        Ok(req) => req.with_process(process.clone()),
        Err(r) => return refuse(ctx, client, Some(&peeked), None, r).await,
    };
    let body = match head.request_body() {
        Ok(body) => body,
        Err(e) => {
            return refuse(
                ctx,
                client,
                Some(&peeked),
                Some(&req),
                Refusal::Malformed(e.to_string()),
            )
            .await;
        }
    };
    let ruling = match ctx.decide_held(&req, &client.stream).await {
        Ok(ruling) => ruling,
        Err(r) => return refuse(ctx, client, Some(&peeked), Some(&req), r).await,
    };
    let mut upstream = match take_cached(cache, &req) {
        Some(up) => up,
        None => match open(ctx, &req).await {
            Ok(up) => up,
            Err(r) => return refuse(ctx, client, Some(&peeked), Some(&req), r).await,
        },
    };
    if let Err(r) = ctx.record_allow(&peeked, &req, &ruling).await {
        return refuse_unrecorded(ctx, client, r).await;
    }
    match exchange(ctx, client, &head, &authority, &path, body, &mut upstream).await {
        Ok((next, reuse)) => {
            if reuse {
                *cache = Some(upstream);
            }
            next
        }
        Err(Failure::Upstream(r)) => {
            // Already recorded as allowed; report the upstream's failure to
            // the client if nothing of the response was sent yet.
            let _ = write_all(&mut client.stream, &r.response(), ctx.config.idle_timeout).await;
            Next::Close
        }
        Err(Failure::Broken) => Next::Close,
    }
}

enum Failure {
    /// The upstream failed before any response byte reached the client.
    Upstream(Refusal),
    /// Either side failed mid-message; only closing is left.
    Broken,
}

fn take_cached(cache: &mut Option<Upstream>, req: &ConnectionRequest) -> Option<Upstream> {
    let up = cache.take()?;
    if up.host != req.host || up.port != req.port || !up.conn.buf.is_empty() {
        return None;
    }
    // A kept connection the server has since closed reads as EOF now.
    let mut probe = [0u8; 1];
    match up.conn.stream.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(up),
        _ => None,
    }
}

async fn open(ctx: &ProxyContext, req: &ConnectionRequest) -> Result<Upstream, Refusal> {
    let addrs = ctx.resolver.resolve(&req.host, req.port).await?;
    let label = format!("{}:{}", host_port_host(&req.host), req.port);
    let stream = connect(&addrs, ctx.config.connect_timeout, &label).await?;
    Ok(Upstream {
        host: req.host.clone(),
        port: req.port,
        conn: Conn::new(stream, ctx.config.idle_timeout),
    })
}

/// Sends the request upstream and the response back. Returns whether the
/// client connection and the upstream connection can be reused.
async fn exchange(
    ctx: &ProxyContext,
    client: &mut Conn,
    head: &Head,
    authority: &str,
    path: &str,
    body: BodyKind,
    up: &mut Upstream,
) -> Result<(Next, bool), Failure> {
    let idle = ctx.config.idle_timeout;
    if body != BodyKind::None
        && head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    {
        write_all(&mut client.stream, b"HTTP/1.1 100 Continue\r\n\r\n", idle)
            .await
            .map_err(|_| Failure::Broken)?;
    }
    let mut request = request_head(head, authority, path);
    // Likewise a small request body the client sent with its head.
    let body = coalesce(&mut client.buf, body, &mut request);
    write_all(&mut up.conn.stream, &request, idle)
        .await
        .map_err(|e| Failure::Upstream(Refusal::Unreachable(format!("{authority}: {e}"))))?;
    let copied = match body {
        BodyKind::None | BodyKind::Length(0) => Ok(()),
        BodyKind::Length(n) => client.copy_exact(n, &mut up.conn.stream).await,
        BodyKind::Chunked => client.copy_chunked(&mut up.conn.stream).await,
        BodyKind::UntilClose => Err(std::io::ErrorKind::InvalidInput.into()),
    };
    copied.map_err(|_| Failure::Broken)?;

    let (resp, raw) = loop {
        let (resp, raw) = up
            .conn
            .read_head(parse_response)
            .await
            .map_err(|e| Failure::Upstream(bad_gateway(authority, e)))?;
        if (100..200).contains(&resp.status) {
            if resp.status == 101 {
                return Err(Failure::Upstream(Refusal::BadGateway(
                    "unexpected protocol switch".into(),
                )));
            }
            // Interim responses pass through; our own 100 already went out.
            if head.version == 1 && (resp.status != 100 || head.header("expect").is_none()) {
                write_all(&mut client.stream, &raw, idle)
                    .await
                    .map_err(|_| Failure::Broken)?;
            }
            continue;
        }
        break (resp, raw);
    };
    let framing = resp
        .response_body(&head.method)
        .map_err(|e| Failure::Upstream(Refusal::BadGateway(e.to_string())))?;
    let client_keep = head.version == 1 && !head.connection_has("close") && framing != BodyKind::UntilClose;
    let upstream_keep =
        head.version == 1 && resp.version == 1 && !resp.connection_has("close") && framing != BodyKind::UntilClose;

    let mut out = response_head(&resp, &raw, client_keep);
    // A small body already read with the head goes out in the same write:
    // one send instead of two for the common small response.
    let framing = coalesce(&mut up.conn.buf, framing, &mut out);
    write_all(&mut client.stream, &out, idle)
        .await
        .map_err(|_| Failure::Broken)?;
    let copied = match framing {
        BodyKind::None | BodyKind::Length(0) => Ok(()),
        BodyKind::Length(n) => up.conn.copy_exact(n, &mut client.stream).await,
        BodyKind::Chunked => up.conn.copy_chunked(&mut client.stream).await,
        BodyKind::UntilClose => up.conn.copy_to_end(&mut client.stream).await,
    };
    copied.map_err(|_| Failure::Broken)?;
    if !client_keep {
        let _ = client.stream.shutdown().await;
    }
    Ok((if client_keep { Next::KeepAlive } else { Next::Close }, upstream_keep))
}

/// Moves the start of a `Content-Length` body that is already buffered (at
/// most [`COALESCE`] bytes) behind its head in `out`, so both leave in one
/// write; returns what is left to copy.
fn coalesce(buf: &mut bytes::BytesMut, body: BodyKind, out: &mut Vec<u8>) -> BodyKind {
    let BodyKind::Length(n) = body else {
        return body;
    };
    let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX)).min(COALESCE);
    out.extend_from_slice(&buf[..take]);
    buf.advance(take);
    BodyKind::Length(n - take as u64)
}

fn bad_gateway(authority: &str, e: ReadHeadError) -> Refusal {
    match e {
        ReadHeadError::Closed | ReadHeadError::Truncated => {
            Refusal::BadGateway(format!("{authority} closed the connection without a complete response"))
        }
        ReadHeadError::Head(h) => Refusal::BadGateway(h.to_string()),
        ReadHeadError::Io(io) => Refusal::BadGateway(format!("{authority}: {io}")),
    }
}

/// Headers named in `Connection` are hop-by-hop too.
fn connection_tokens(head: &Head) -> Vec<String> {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .filter_map(|t| std::str::from_utf8(t.trim_ascii()).ok().map(str::to_ascii_lowercase))
        .collect()
}

fn end_to_end(head: &Head) -> impl Iterator<Item = &(String, Vec<u8>)> {
    let listed = connection_tokens(head);
    head.headers
        .iter()
        .filter(move |(n, _)| !is_hop_by_hop(n) && !listed.iter().any(|t| n.eq_ignore_ascii_case(t)))
}

fn request_head(head: &Head, authority: &str, path: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if head.version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    out.extend_from_slice(b"Host: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in end_to_end(head) {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn response_head(resp: &Head, raw: &Bytes, keep: bool) -> Vec<u8> {
    let status_line_end = raw.iter().position(|&b| b == b'\n').map_or(raw.len(), |p| p + 1);
    let mut out = Vec::with_capacity(raw.len() + 32);
    out.extend_from_slice(&raw[..status_line_end]);
    for (name, value) in end_to_end(resp) {
        push_header(&mut out, name, value);
    }
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Refuses one request: audit, the HTTP refusal, then close (after a
/// refusal the rest of the client's stream cannot be trusted to be framed).
pub(crate) async fn refuse(
    ctx: &ProxyContext,
    client: &mut Conn,
    peeked: Option<&PeekedHost>,
    req: Option<&ConnectionRequest>,
    r: Refusal,
) -> Next {
    ctx.record_refusal(peeked, req, &r, Some(r.status())).await;
    refuse_unrecorded(ctx, client, r).await
}

async fn refuse_unrecorded(ctx: &ProxyContext, client: &mut Conn, r: Refusal) -> Next {
    if client.reset_on_refusal {
        let _ = socket2::SockRef::from(&client.stream).set_linger(Some(std::time::Duration::ZERO));
        return Next::Close;
    }
    respond_and_close(&mut client.stream, &r.response(), ctx.config.idle_timeout).await;
    Next::Close
}
