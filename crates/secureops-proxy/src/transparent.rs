//! Redirected connections (`secureops run`): the agent connected to some
//! address and nftables brought it here. The original destination comes
//! from `SO_ORIGINAL_DST`; the host from the TLS SNI or the HTTP `Host`
//! header, peeked without consuming or altering a byte. The proxy then
//! resolves that host itself and connects to the vetted address — never to
//! the IP the client chose, so an SNI naming an allowed host cannot reach
//! an attacker's address. With no host visible (raw TCP, TLS without SNI)
//! only IP/CIDR rules can allow. Refusal is a TCP reset.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use secureops_audit::Via;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::context::ProxyContext;
use crate::decision::ConnectionRequest;
use crate::peek::PeekedHost;

use crate::peek::tls_sni::{SniError, looks_like_tls, parse_sni};
use crate::refusal::Refusal;
use crate::relay::relay_metered;
use crate::resolve::connect;

/// The destination the client asked for before the redirect.
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    match stream.local_addr()? {
        SocketAddr::V4(_) => rustix::net::sockopt::ip_original_dst(stream).map(SocketAddr::V4),
        SocketAddr::V6(_) => rustix::net::sockopt::ipv6_original_dst(stream).map(SocketAddr::V6),
    }
    .map_err(std::io::Error::from)
}

/// What the first bytes showed.
enum Seen {
    Host(String, Via),
    /// An HTTP request: handled request by request.
    Http,
    Nothing,
}

/// Handles one redirected connection.
pub async fn handle_transparent(stream: TcpStream, peer: Option<SocketAddr>, ctx: &ProxyContext) {
    let orig = match original_dst(&stream) {
        Ok(addr) => addr,
        Err(e) => {
            tracing::warn!(error = %e, "no original destination; resetting");
            let r = Refusal::Malformed(format!("no original destination: {e}"));
            let mut f = secureops_audit::AuditFinding::new(secureops_audit::Kind::Egress, r.verdict(), r.to_string());
            f.via = Some(Via::Ip);
            ctx.count_refusal(r.class());
            let _ = ctx.record(f).await;
            return reset(stream);
        }
    };
    let mut client = Conn::new(stream, ctx.config.idle_timeout);
    let process = ctx.attribute_off_thread(peer, Some(orig)).await;
    let peeked = match peek(&mut client, ctx.config.peek_timeout).await {
        Ok(Seen::Http) => {
            // Every request is decided on its own Host (a keep-alive
            // request cannot name another virtual host of the same server).
            client.reset_on_refusal = true;
            let mode = crate::http::Mode::Transparent { port: orig.port() };
            return crate::server::serve_http(ctx, client, mode, peer, &process).await;
        }
        Ok(Seen::Host(host, via)) => PeekedHost {
            host,
            port: orig.port(),
            via,
        },
        Ok(Seen::Nothing) => PeekedHost {
            host: ip_text(orig.ip()),
            port: orig.port(),
            via: Via::Ip,
        },
        Err(r) => {
            let peeked = PeekedHost {
                host: ip_text(orig.ip()),
                port: orig.port(),
                via: Via::Ip,
            };
            return refuse(ctx, client, &peeked, None, &process, r).await;
        }
    };
    let req = match ctx.request(&peeked, peer) {
        Ok(req) => req.with_process(process.clone()),
        Err(r) => return refuse(ctx, client, &peeked, None, &process, r).await,
    };
    let ruling = match ctx.decide_held(&req, &client.stream).await {
        Ok(ruling) => ruling,
        Err(r) => return refuse(ctx, client, &peeked, Some(&req), &process, r).await,
    };
    let label = format!("{}:{}", crate::decision::host_port_host(&req.host), req.port);
    let mut upstream = match ctx.resolver.resolve(&req.host, req.port).await {
        Ok(addrs) => match connect(&addrs, ctx.config.connect_timeout, &label).await {
            Ok(s) => s,
            Err(r) => return refuse(ctx, client, &peeked, Some(&req), &process, r).await,
        },
        Err(r) => return refuse(ctx, client, &peeked, Some(&req), &process, r).await,
    };
    if let Err(r) = ctx.record_allow(&peeked, &req, &ruling).await {
        // The audit log reports its failure once per episode.
        tracing::debug!(%r, host = %req.host, "transparent connection reset: cannot record it");
        return reset(client.stream);
    }
    if !ctx.send_peeked(&client.buf, &mut upstream).await {
        return;
    }
    client.buf = Default::default();
    let _open = ctx.count_tunnel();
    let relayed = relay_metered(
        &mut client.stream,
        &mut upstream,
        ctx.config.idle_timeout,
        None::<fn(&[u8]) -> crate::relay::Gate>,
        ctx.stats.as_deref(),
    )
    .await;
    if let Err(e) = relayed {
        tracing::debug!(error = %e, host = %req.host, "transparent connection ended");
    }
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_string()
}

/// Reads the client's first bytes within `window`: a ClientHello gives the
/// SNI, an HTTP request head gives `Host`; silence or other bytes give
/// nothing (decided on the IP alone).
async fn peek(client: &mut Conn, window: Duration) -> Result<Seen, Refusal> {
    let deadline = Instant::now() + window;
    loop {
        if !client.buf.is_empty() {
            if looks_like_tls(&client.buf) {
                match parse_sni(&client.buf) {
                    Ok(Some(sni)) => return Ok(Seen::Host(sni, Via::Sni)),
                    Ok(None) => return Ok(Seen::Nothing),
                    Err(SniError::Incomplete) => {}
                    Err(e) => return Err(Refusal::UnreadableHandshake(e.to_string())),
                }
            } else if starts_like_http(&client.buf) {
                return Ok(Seen::Http);
            } else {
                return Ok(Seen::Nothing);
            }
        }
        let started = !client.buf.is_empty();
        tokio::select! {
            read = client.fill() => match read {
                Ok(0) if started => return Err(Refusal::Malformed("client closed mid-handshake".into())),
                Ok(0) => return Ok(Seen::Nothing),
                Ok(_) => {}
                Err(e) => return Err(Refusal::Malformed(e.to_string())),
            },
            () = tokio::time::sleep_until(deadline) => {
                return if started {
                    Err(Refusal::UnreadableHandshake("incomplete handshake at end of peek window".into()))
                } else {
                    Ok(Seen::Nothing)
                };
            }
        }
    }
}

/// An HTTP/1 request starts with an upper-case method token and a space.
fn starts_like_http(buf: &[u8]) -> bool {
    let token = buf.iter().take(8).take_while(|b| b.is_ascii_uppercase()).count();
    token > 0 && (token == buf.len() || buf.get(token) == Some(&b' '))
}

async fn refuse(
    ctx: &ProxyContext,
    client: Conn,
    peeked: &PeekedHost,
    req: Option<&ConnectionRequest>,
    process: &crate::attribution::Process,
    r: Refusal,
) {
    let mut finding = crate::context::egress_finding(peeked, req, r.verdict(), &r.to_string());
    if req.is_none() {
        finding.pid = process.pid;
        finding.exe.clone_from(&process.exe);
    }
    let _ = ctx.record(finding).await;
    reset(client.stream);
}

/// Closes with a TCP RST (SO_LINGER 0): the client sees a refused
/// connection, not an orderly end of stream.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::starts_like_http;

    #[test]
    fn http_detection() {
        assert!(starts_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(starts_like_http(b"POST"));
        assert!(!starts_like_http(b"SSH-2.0-x"));
        assert!(!starts_like_http(b"\x16\x03\x01"));
        assert!(!starts_like_http(b"get / HTTP/1.1"));
    }
}
