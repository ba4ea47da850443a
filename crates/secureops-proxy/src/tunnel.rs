//! `CONNECT host:port`: decide on the CONNECT host, connect to the vetted
//! address, answer 200, then peek the client's first bytes: a TLS
//! ClientHello naming another host closes the tunnel before the upstream
//! sees a byte (naive domain fronting). One audit entry per tunnel, written
//! once the peek is over and before anything is relayed.

use std::net::SocketAddr;

use secureops_policy::normalize_host;
use tokio::time::Instant;

use crate::attribution::Process;
use crate::conn::{Conn, respond_and_close, write_all};
use crate::context::ProxyContext;
use crate::decision::ConnectionRequest;
use crate::peek::PeekedHost;
use crate::peek::http_head::Head;
use crate::peek::target::connect_destination;
use crate::peek::tls_sni::{SniError, looks_like_tls, parse_sni};
use crate::refusal::Refusal;
use crate::relay::{Gate, relay_metered};
use crate::resolve::connect;

const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// Handles a CONNECT request whose head has been read from `client`.
pub(crate) async fn tunnel(
    ctx: &ProxyContext,
    mut client: Conn,
    head: Head,
    peer: Option<SocketAddr>,
    process: &Process,
) {
    let peeked = match connect_destination(&head) {
        Ok(peeked) => peeked,
        Err(r) => return refuse(ctx, client, None, None, r).await,
    };
    let req = match ctx.request(&peeked, peer) {
        Ok(req) => req.with_process(process.clone()),
        Err(r) => return refuse(ctx, client, Some(&peeked), None, r).await,
    };
    let ruling = match ctx.decide_held(&req, &client.stream).await {
        Ok(ruling) => ruling,
        Err(r) => return refuse(ctx, client, Some(&peeked), Some(&req), r).await,
    };
    let label = format!("{}:{}", crate::decision::host_port_host(&req.host), req.port);
    let mut upstream = match ctx.resolver.resolve(&req.host, req.port).await {
        Ok(addrs) => match connect(&addrs, ctx.config.connect_timeout, &label).await {
            Ok(s) => s,
            Err(r) => return refuse(ctx, client, Some(&peeked), Some(&req), r).await,
        },
        Err(r) => return refuse(ctx, client, Some(&peeked), Some(&req), r).await,
    };
    if let Err(e) = write_all(&mut client.stream, ESTABLISHED, ctx.config.idle_timeout).await {
        // Still one entry: the client went away before the tunnel opened.
        let r = Refusal::Malformed(format!("client gone before the tunnel opened: {e}"));
        ctx.record_refusal(Some(&peeked), Some(&req), &r, None).await;
        return;
    }
    match peek(&mut client, &upstream, ctx.config.peek_timeout).await {
        Ok(Some(sni)) if !same_host(&sni, &req) => {
            let r = Refusal::SniMismatch {
                sni,
                host: req.host.to_string(),
            };
            return close_tunnel(ctx, client, &peeked, &req, r).await;
        }
        Ok(_) => {}
        Err(r) => return close_tunnel(ctx, client, &peeked, &req, r).await,
    }
    if let Err(r) = ctx.record_allow(&peeked, &req, &ruling).await {
        // The audit log reports its failure once per episode.
        tracing::debug!(%r, host = %req.host, "tunnel closed: cannot record it");
        return;
    }
    if !ctx.send_peeked(&client.buf, &mut upstream).await {
        return;
    }
    // Nothing from the client yet (server spoke first, or the peek window
    // ended): its first bytes are still checked when they come, so waiting
    // out the window cannot smuggle a fronted ClientHello through.
    let checked = !client.buf.is_empty();
    client.buf = Default::default();
    let idle = ctx.config.idle_timeout;
    let _open = ctx.count_tunnel();
    let stats = ctx.stats.as_deref();
    let relayed = if checked {
        relay_metered(
            &mut client.stream,
            &mut upstream,
            idle,
            None::<fn(&[u8]) -> Gate>,
            stats,
        )
        .await
    } else {
        let gate = |first: &[u8]| sni_gate(first, &req);
        relay_metered(&mut client.stream, &mut upstream, idle, Some(gate), stats).await
    };
    match relayed {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // The tunnel's entry said allow; this second entry records why
            // it was cut, before the reset (nothing of it went upstream).
            let r = Refusal::UnreadableHandshake(e.to_string());
            close_tunnel(ctx, client, &peeked, &req, r).await;
        }
        Err(e) => tracing::debug!(error = %e, host = %req.host, "tunnel ended"),
        Ok(_) => {}
    }
}

/// The late check of a tunnel's first client bytes.
fn sni_gate(first: &[u8], req: &ConnectionRequest) -> Gate {
    if !looks_like_tls(first) {
        return Gate::Pass;
    }
    match parse_sni(first) {
        Err(SniError::Incomplete) => Gate::NeedMore,
        Err(e) => Gate::Refuse(e.to_string()),
        Ok(Some(sni)) if !same_host(&sni, req) => Gate::Refuse(
            Refusal::SniMismatch {
                sni,
                host: req.host.to_string(),
            }
            .to_string(),
        ),
        Ok(_) => Gate::Pass,
    }
}

fn same_host(sni: &str, req: &ConnectionRequest) -> bool {
    normalize_host(sni).is_ok_and(|h| h == req.host)
}

/// Waits for the client's first bytes. Returns the SNI when they are a
/// ClientHello, `None` when they are something else, when the server speaks
/// first or when the client sends nothing within `window`.
async fn peek(
    client: &mut Conn,
    upstream: &tokio::net::TcpStream,
    window: std::time::Duration,
) -> Result<Option<String>, Refusal> {
    let deadline = Instant::now() + window;
    loop {
        if !client.buf.is_empty() {
            if !looks_like_tls(&client.buf) {
                return Ok(None);
            }
            match parse_sni(&client.buf) {
                Ok(sni) => return Ok(sni),
                Err(SniError::Incomplete) => {}
                Err(e) => return Err(Refusal::UnreadableHandshake(e.to_string())),
            }
        }
        let waiting_for_hello = !client.buf.is_empty();
        tokio::select! {
            read = client.fill() => match read {
                Ok(0) if waiting_for_hello => return Err(Refusal::UnreadableHandshake("client closed mid-ClientHello".into())),
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(Refusal::UnreadableHandshake(e.to_string())),
            },
            _ = upstream.readable(), if !waiting_for_hello => return Ok(None),
            () = tokio::time::sleep_until(deadline) => {
                return if waiting_for_hello {
                    Err(Refusal::UnreadableHandshake("ClientHello incomplete at end of peek window".into()))
                } else {
                    Ok(None)
                };
            }
        }
    }
}

/// Refuses before the tunnel is established: audit, then the HTTP refusal.
async fn refuse(
    ctx: &ProxyContext,
    mut client: Conn,
    peeked: Option<&PeekedHost>,
    req: Option<&ConnectionRequest>,
    r: Refusal,
) {
    ctx.record_refusal(peeked, req, &r, Some(r.status())).await;
    respond_and_close(&mut client.stream, &r.response(), ctx.config.idle_timeout).await;
}

/// Refuses after `200`: audit, then close both sides; the upstream has seen
/// no byte from the client.
async fn close_tunnel(ctx: &ProxyContext, client: Conn, peeked: &PeekedHost, req: &ConnectionRequest, r: Refusal) {
    tracing::debug!(reason = %r, "tunnel refused");
    ctx.record_refusal(Some(peeked), Some(req), &r, None).await;
    // Reset rather than a clean close: the client must not read this as
    // an orderly end of stream.
    let _ = socket2::SockRef::from(&client.stream).set_linger(Some(std::time::Duration::ZERO));
}
