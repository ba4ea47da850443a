//! The TCP listener (RFC 7766): 2-byte length-prefixed messages, queries
//! on one connection answered in order, a cap on open connections, and an
//! idle timeout before and between queries so a silent client cannot hold
//! a slot. Anything that does not frame as DNS closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::Transport;
use crate::dns::engine::Engine;

/// Serves `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(engine.config.max_tcp_connections.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "dns tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over the cap: closed at once, the client falls back or retries.
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (engine, shutdown) = (Arc::clone(&engine), shutdown.clone());
        tracker.spawn(async move {
            connection(stream, peer, &engine, &shutdown).await;
            drop(permit);
        });
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, engine: &Engine, shutdown: &CancellationToken) {
    let idle = engine.config.tcp_idle_timeout;
    loop {
        // The whole message (length and body) must arrive within the idle
        // timeout: a client sending one byte at a time cannot stall us.
        let read = async {
            let len = usize::from(stream.read_u16().await?);
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let message = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(idle, read) => match r {
                Ok(Ok(m)) => m,
                // Timeout, EOF, reset: nothing more to answer.
                _ => return,
            },
        };
        let reply = match engine.admit(&message, peer.ip()) {
            Ok(()) => engine.answer(&message, peer, Transport::Tcp).await,
            Err(refused) => refused,
        };
        let Some(reply) = reply else {
            // A response or garbage header: not a DNS client, hang up.
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else { return };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(idle, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
