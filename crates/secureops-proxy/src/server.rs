//! The explicit listener: accept → read head → CONNECT tunnel or
//! absolute-form HTTP, with a connection cap and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::attribution::Process;
use crate::conn::{Conn, ReadHeadError};
use crate::context::ProxyContext;
use crate::decision::FailMode;
use crate::http::{self, Mode, Next};
use crate::local_hop;
use crate::peek::http_head::{HeadError, parse_request};
use crate::refusal::Refusal;
use crate::stats::RefusalClass;
use crate::transparent::handle_transparent;
use crate::tunnel::tunnel;

/// Connections refused for being over `max_connections` are answered by
/// short tasks; beyond this many at once they are closed without an answer
/// (and without an entry) so a flood cannot grow memory without bound.
const MAX_PENDING_REFUSALS: usize = 1024;

/// Local forward proxy that authorizes every outbound agent connection.
#[derive(Debug)]
pub struct EgressProxy {
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    transparent: bool,
}

impl EgressProxy {
    /// Binds the explicit listener (`config.listen`).
    pub async fn bind(ctx: Arc<ProxyContext>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(ctx.config.listen).await?;
        local_hop::unpace_listener(&listener, listener.local_addr());
        Ok(Self {
            listener,
            ctx,
            transparent: false,
        })
    }

    /// Serves an already bound listener: the explicit proxy protocol, or
    /// redirected connections when `transparent` (SNI / Host peek).
    pub fn from_std(
        listener: std::net::TcpListener,
        ctx: Arc<ProxyContext>,
        transparent: bool,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        local_hop::unpace_listener(&listener, listener.local_addr());
        Ok(Self {
            listener: TcpListener::from_std(listener)?,
            ctx,
            transparent,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What the proxy does on any error: always [`FailMode::Closed`].
    pub fn on_error(&self) -> FailMode {
        FailMode::Closed
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and lets
    /// open connections finish for at most `drain_timeout`.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.ctx.config.max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let ctx = Arc::clone(&self.ctx);
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => {
                    let transparent = self.transparent;
                    tracker.spawn(async move {
                        if transparent {
                            handle_transparent(stream, Some(peer), &ctx).await;
                        } else {
                            handle_connection(stream, Some(peer), &ctx).await;
                        }
                        drop(permit);
                    });
                }
                // Redirected clients get a reset (no entry: the flood
                // itself is the signal; `max_connections` bounds the work).
                Err(_) if self.transparent => {
                    self.ctx.count_refusal(RefusalClass::Overloaded);
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
                }
                Err(_) => match Arc::clone(&refusals).try_acquire_owned() {
                    Ok(permit) => {
                        tracker.spawn(async move {
                            refuse_overloaded(stream, &ctx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        self.ctx.count_refusal(RefusalClass::Overloaded);
                        drop(stream);
                    }
                },
            }
        }
        tracker.close();
        if tokio::time::timeout(self.ctx.config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            tracing::info!(open = tracker.len(), "drain timeout: closing remaining connections");
        }
    }
}

async fn refuse_overloaded(stream: TcpStream, ctx: &ProxyContext) {
    let mut client = Conn::new(stream, ctx.config.header_timeout);
    let r = Refusal::Overloaded(ctx.config.max_connections);
    http::refuse(ctx, &mut client, None, None, r).await;
}

/// Handles one proxied connection: reads the request head, asks the PDP,
/// and either tunnels / forwards to the vetted upstream (`Allow`) or refuses
/// without ever contacting the upstream (`Deny`/`Escalate`: 0 bytes leave).
/// Every error ends in a refusal (fail-closed, W0).
pub async fn handle_connection(stream: TcpStream, peer: Option<SocketAddr>, ctx: &ProxyContext) {
    let process = ctx.attribute_off_thread(peer, stream.local_addr().ok()).await;
    let client = Conn::new(stream, ctx.config.idle_timeout);
    serve_http(ctx, client, Mode::Explicit, peer, &process).await;
}

/// The request loop of one HTTP/1 client connection: every request is
/// read, decided, audited and forwarded on its own; CONNECT (explicit mode
/// only) turns the connection into a tunnel.
pub(crate) async fn serve_http(
    ctx: &ProxyContext,
    mut client: Conn,
    mode: Mode,
    peer: Option<SocketAddr>,
    process: &Process,
) {
    let mut cache = None;
    let mut first = true;
    loop {
        let read = tokio::time::timeout(ctx.config.header_timeout, client.read_head(parse_request)).await;
        let head = match read {
            Ok(Ok((head, _raw))) => head,
            // A keep-alive client that goes quiet or away between requests
            // is not a refusal.
            Ok(Err(ReadHeadError::Closed)) => return,
            Err(_) if !first && client.buf.is_empty() => return,
            Ok(Err(ReadHeadError::Io(_))) if !first && client.buf.is_empty() => return,
            Err(_) => {
                let r = Refusal::HeaderTimeout(ctx.config.header_timeout.as_millis() as u64);
                http::refuse(ctx, &mut client, None, None, r).await;
                return;
            }
            Ok(Err(e)) => {
                let why = match e {
                    ReadHeadError::Head(HeadError::Incomplete) | ReadHeadError::Truncated => {
                        "connection closed mid-request".to_owned()
                    }
                    ReadHeadError::Head(h) => h.to_string(),
                    ReadHeadError::Io(io) => io.to_string(),
                    ReadHeadError::Closed => String::new(),
                };
                http::refuse(ctx, &mut client, None, None, Refusal::Malformed(why)).await;
                return;
            }
        };
        first = false;
        if head.method.eq_ignore_ascii_case("CONNECT") {
            if mode != Mode::Explicit {
                let r = Refusal::Malformed("CONNECT on a redirected connection".into());
                http::refuse(ctx, &mut client, None, None, r).await;
                return;
            }
            return tunnel(ctx, client, head, peer, process).await;
        }
        if http::forward(ctx, &mut client, head, &mut cache, peer, process, mode).await == Next::Close {
            return;
        }
    }
}
