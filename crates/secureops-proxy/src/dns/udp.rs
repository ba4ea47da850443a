//! The UDP listener: one task reads datagrams (in batches while the socket
//! has them) and spawns one task per batch that answers its queries
//! concurrently, so they share one audit group commit and one wake-up, and
//! batches spread over the runtime's threads. The per-client rate limit is checked before any
//! decoding; beyond `max_in_flight` queries the task stops reading (the
//! kernel queues, then drops).

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::Transport;
use crate::dns::answer::MAX_QUERY;
use crate::dns::engine::Engine;

/// Datagrams read in one go before yielding to the scheduler.
const READ_BATCH: usize = 64;

/// Serves `socket` until `shutdown`; the queries in flight are tracked by
/// `tracker`.
pub(crate) async fn serve(
    socket: Arc<UdpSocket>,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(engine.config.max_in_flight.max(1)));
    // One byte more than the largest query: a datagram that fills it is
    // oversized (the kernel cuts datagrams to the buffer silently).
    let mut buf = vec![0u8; MAX_QUERY + 1];
    let mut batch = Vec::with_capacity(READ_BATCH);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            ready = socket.readable() => if let Err(e) = ready {
                tracing::debug!(error = %e, "dns udp readable");
                continue;
            },
        }
        for _ in 0..READ_BATCH {
            // No slot: stop reading until a query finishes (first hand
            // over the batch so far: it may hold the slots).
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => p,
                Err(_) if !batch.is_empty() => break,
                Err(_) => tokio::select! {
                    () = shutdown.cancelled() => return,
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                },
            };
            let (n, peer) = match socket.try_recv_from(&mut buf) {
                Ok(pair) => pair,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors of earlier sends surface here; not fatal.
                Err(e) => {
                    tracing::debug!(error = %e, "dns udp recv");
                    continue;
                }
            };
            let Some(bytes) = buf.get(..n) else { continue };
            if let Err(refusal) = engine.admit(bytes, peer.ip()) {
                if let Some(refused) = refusal {
                    let _ = socket.try_send_to(&refused, peer);
                }
                continue;
            }
            batch.push((bytes.to_vec(), peer, permit));
        }
        if batch.is_empty() {
            continue;
        }
        // One task answers the whole read batch, its queries concurrently:
        // their audit entries reach the writer together and its answers wake
        // one task, not one each (thread hand-offs dominate at this rate).
        let queries = std::mem::take(&mut batch);
        let (socket, engine) = (Arc::clone(&socket), Arc::clone(&engine));
        tracker.spawn(async move {
            join_all(queries.into_iter().map(|(packet, peer, permit)| {
                let (socket, engine) = (&socket, &engine);
                async move {
                    answer(socket, engine, &packet, peer).await;
                    drop(permit);
                }
            }))
            .await;
        });
    }
}

async fn answer(socket: &UdpSocket, engine: &Engine, packet: &[u8], peer: SocketAddr) {
    if let Some(reply) = engine.answer(packet, peer, Transport::Udp).await
        && let Err(e) = socket.send_to(&reply, peer).await
    {
        tracing::debug!(error = %e, %peer, "dns udp send");
    }
}
