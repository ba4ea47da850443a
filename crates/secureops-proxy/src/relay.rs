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

/// What a gate says about the client's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Not enough bytes to tell yet.
    NeedMore,
    /// Let them (and everything after) through.
    Pass,
    /// Close the tunnel; nothing of these bytes reaches the upstream.
    Refuse(String),
}

/// Most bytes a gate may hold back before it must decide.
const GATE_LIMIT: usize = 16 * 1024;

/// Relays between `client` and `upstream` until both directions finish,
/// one fails, or the tunnel is idle for `idle`.
pub async fn relay(client: &mut TcpStream, upstream: &mut TcpStream, idle: Duration) -> std::io::Result<Relayed> {
    relay_with(client, upstream, idle, None::<fn(&[u8]) -> Gate>).await
}

/// Like [`relay`], but the client's first bytes are held back until `gate`
/// passes them (the upstream may speak first meanwhile). A refusal ends the
/// relay with an error of kind `PermissionDenied` carrying the reason.
pub async fn relay_gated(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    gate: impl FnMut(&[u8]) -> Gate,
) -> std::io::Result<Relayed> {
    relay_with(client, upstream, idle, Some(gate)).await
}

async fn relay_with(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    gate: Option<impl FnMut(&[u8]) -> Gate>,
) -> std::io::Result<Relayed> {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (cr, cw) = client.split();
    let (ur, uw) = upstream.split();
    let (sent, received) = tokio::try_join!(
        pump(cr, uw, &last, start, idle, gate),
        pump(ur, cw, &last, start, idle, None::<fn(&[u8]) -> Gate>)
    )?;
    Ok(Relayed { sent, received })
}

async fn pump(
    mut r: ReadHalf<'_>,
    mut w: WriteHalf<'_>,
    last: &AtomicU64,
    start: Instant,
    idle: Duration,
    mut gate: Option<impl FnMut(&[u8]) -> Gate>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    let mut held: Vec<u8> = Vec::new();
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
            if gate.is_some() && !held.is_empty() {
                return Err(refused("client closed before its first bytes could be checked".into()));
            }
            // Carry the half-close and let the other direction finish.
            let _ = w.shutdown().await;
            return Ok(total);
        }
        let mut chunk = &buf[..n];
        if let Some(check) = gate.as_mut() {
            held.extend_from_slice(chunk);
            match check(&held) {
                Gate::NeedMore if held.len() < GATE_LIMIT => continue,
                Gate::NeedMore => return Err(refused("first bytes could not be checked".into())),
                Gate::Refuse(why) => return Err(refused(why)),
                Gate::Pass => gate = None,
            }
            chunk = &held;
        }
        tokio::time::timeout(idle, w.write_all(chunk))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))?;
        total += chunk.len() as u64;
        held = Vec::new();
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}
