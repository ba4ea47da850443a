//! Relaying an allowed tunnel: both directions at once, half-close carried
//! through (a client that shuts down its sending side still receives every
//! byte the upstream sends), and the tunnel closed once neither direction
//! has moved a byte for `idle_timeout_s`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

const BUF: usize = 16 * 1024;

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Client to upstream.
    pub sent: u64,
    /// Upstream to client.
    pub received: u64,
}

/// Relays between `client` and `upstream` until both directions finish,
/// one fails, or the tunnel is idle for `idle`.
pub async fn relay(client: &mut TcpStream, upstream: &mut TcpStream, idle: Duration) -> std::io::Result<Relayed> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (cr, cw) = client.split();
    let (ur, uw) = upstream.split();
    let (sent, received) = tokio::try_join!(pump(cr, uw, &last, start, idle), pump(ur, cw, &last, start, idle))?;
    Ok(Relayed { sent, received })
}

async fn pump(
    mut r: ReadHalf<'_>,
    mut w: WriteHalf<'_>,
    last: &AtomicU64,
    start: Instant,
    idle: Duration,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match tokio::time::timeout(idle, r.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => {
                // Quiet in this direction; the tunnel is idle only when the
                // other direction has been quiet as long.
                let since = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if since >= idle.as_millis() as u64 {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                continue;
            }
        };
        if n == 0 {
            // Carry the half-close and let the other direction finish.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        tokio::time::timeout(idle, w.write_all(&buf[..n]))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?;
        total += n as u64;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
