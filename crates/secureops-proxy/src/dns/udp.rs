//! The UDP listener: one task reads datagrams (in batches while the socket
//! has them). The queries of a batch that need nothing from elsewhere
//! (sinkholed, static, cached, local reverse: [`Prepared::Local`]) are
//! answered right in the reader, their audit entries appended as one group
//! on this thread when the log's writer is free (no hand-off to its thread
//! and back, which would cost more than the answer itself). The rest, and
//! everything while the writer is busy, go to one task per batch that
//! answers its queries concurrently, so they share one audit group commit
//! and one wake-up. The per-client rate limit is checked before any
//! decoding; beyond `max_in_flight` queries the task stops reading (the
//! kernel queues, then drops).
//!
//! Writing on the reader's thread means a file system that stalls a
//! `write` stalls this reader too (no answers meanwhile, which is
//! fail-closed) instead of turning answers into REFUSED after the audit
//! timeout; a log that fails answers at once either way.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::join_all;
use secureops_audit::AuditFinding;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dns::Transport;
use crate::dns::answer::MAX_QUERY;
use crate::dns::engine::{Answer, Engine, Prepared};

/// Datagrams read in one go before yielding to the scheduler.
const READ_BATCH: usize = 64;

/// A query answered in the reader: its answer, client and in-flight slot.
type Ready = (Answer, SocketAddr, OwnedSemaphorePermit);

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
    let mut waits = Vec::with_capacity(READ_BATCH);
    let mut findings = Vec::with_capacity(READ_BATCH);
    let mut ready: Vec<Ready> = Vec::with_capacity(READ_BATCH);
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
                Err(_) if !waits.is_empty() || !ready.is_empty() => break,
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
            match engine.prepare(bytes, peer, Transport::Udp) {
                Prepared::Local(finding, answer) => {
                    findings.push(finding);
                    ready.push((answer, peer, permit));
                }
                Prepared::Drop => {}
                Prepared::Async(parsed) => waits.push((bytes.to_vec(), parsed, peer, permit)),
            }
        }
        if !ready.is_empty() {
            answer_ready(&socket, &engine, &tracker, &mut findings, &mut ready);
        }
        if waits.is_empty() {
            continue;
        }
        // One task answers the rest of the batch, its queries concurrently:
        // their audit entries reach the writer together and its answers
        // wake one task, not one each.
        let queries = std::mem::take(&mut waits);
        let (socket, engine) = (Arc::clone(&socket), Arc::clone(&engine));
        tracker.spawn(async move {
            join_all(queries.into_iter().map(|(packet, parsed, peer, permit)| {
                let (socket, engine) = (&socket, &engine);
                async move {
                    if let Some(reply) = engine.answer_parsed(*parsed, &packet, peer, Transport::Udp).await {
                        send(socket, &reply, peer).await;
                    }
                    drop(permit);
                }
            }))
            .await;
        });
    }
}

/// Appends the entries of the queries answered in the reader, then sends
/// their answers; if the log's writer is busy, a task waits for it instead.
fn answer_ready(
    socket: &Arc<UdpSocket>,
    engine: &Arc<Engine>,
    tracker: &TaskTracker,
    findings: &mut Vec<AuditFinding>,
    ready: &mut Vec<Ready>,
) {
    let Some((recorded, appended)) = engine.record_now(findings) else {
        let pairs: Vec<_> = findings.drain(..).zip(ready.drain(..)).collect();
        let (socket, engine) = (Arc::clone(socket), Arc::clone(engine));
        tracker.spawn(async move {
            join_all(pairs.into_iter().map(|(finding, (answer, peer, permit))| {
                let (socket, engine) = (&socket, &engine);
                async move {
                    let recorded = engine.record(finding).await;
                    send(socket, &answer.into_bytes(recorded), peer).await;
                    drop(permit);
                }
            }))
            .await;
        });
        return;
    };
    findings.clear();
    let mut late = Vec::new();
    for ((answer, peer, permit), recorded) in ready.drain(..).zip(recorded) {
        let reply = answer.into_bytes(recorded);
        match socket.try_send_to(&reply, peer) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => late.push((reply, peer, permit)),
            Err(e) => tracing::debug!(error = %e, %peer, "dns udp send"),
        }
    }
    // Only now, with the answers out, the background sync may be woken.
    drop(appended);
    if !late.is_empty() {
        // The socket's send buffer is full: wait for room off the reader.
        let socket = Arc::clone(socket);
        tracker.spawn(async move {
            for (reply, peer, permit) in late {
                send(&socket, &reply, peer).await;
                drop(permit);
            }
        });
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer).await {
        tracing::debug!(error = %e, %peer, "dns udp send");
    }
}
