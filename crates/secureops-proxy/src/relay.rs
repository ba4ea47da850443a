//! Relaying an allowed tunnel: both directions at once, half-close carried
//! through (a client that shuts down its sending side still receives every
//! byte the upstream sends), and the tunnel closed once neither direction
//! has moved a byte for `idle_timeout_s`.
//!
//! On Linux each direction moves its bytes socket → pipe → socket with
//! `splice(2)`, so they never enter user space; pipes come from a small
//! shared pool and go back to it whenever a direction has nothing to move,
//! so an idle tunnel holds no pipe. The gate's prefix, other systems and
//! sockets or kernels that refuse `splice` use a buffered copy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::stats::{Direction, ProxyStats};

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
pub async fn relay(client: &mut TcpStream, upstream: &mut TcpStream, idle: Duration) -> io::Result<Relayed> {
    relay_metered(client, upstream, idle, None::<fn(&[u8]) -> Gate>, None).await
}

/// Like [`relay`], but the client's first bytes are held back until `gate`
/// passes them (the upstream may speak first meanwhile). A refusal ends the
/// relay with an error of kind `PermissionDenied` carrying the reason.
pub async fn relay_gated(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    gate: impl FnMut(&[u8]) -> Gate,
) -> io::Result<Relayed> {
    relay_metered(client, upstream, idle, Some(gate), None).await
}

/// [`relay`] (or [`relay_gated`] with a `gate`), adding the bytes to
/// `stats` as they move, so a long tunnel shows up while it runs.
pub async fn relay_metered(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    gate: Option<impl FnMut(&[u8]) -> Gate>,
    stats: Option<&ProxyStats>,
) -> io::Result<Relayed> {
    let clock = Clock {
        start: Instant::now(),
        idle,
        last_ms: AtomicU64::new(0),
    };
    // Readiness and I/O on a tokio socket take `&self`: both directions
    // share each stream without splitting it.
    let (client, upstream) = (&*client, &*upstream);
    let (sent, received) = tokio::try_join!(
        pump(client, upstream, &clock, gate, Meter::new(stats, Direction::Up)),
        pump(
            upstream,
            client,
            &clock,
            None::<fn(&[u8]) -> Gate>,
            Meter::new(stats, Direction::Down)
        )
    )?;
    Ok(Relayed { sent, received })
}

/// Adds one direction's bytes to the metrics, one add per burst.
struct Meter<'a> {
    stats: Option<&'a ProxyStats>,
    direction: Direction,
    counted: u64,
}

impl<'a> Meter<'a> {
    fn new(stats: Option<&'a ProxyStats>, direction: Direction) -> Self {
        Meter {
            stats,
            direction,
            counted: 0,
        }
    }

    /// `total` bytes have moved so far.
    fn update(&mut self, total: u64) {
        if let Some(stats) = self.stats
            && total > self.counted
        {
            stats.relayed(self.direction, total - self.counted);
            self.counted = total;
        }
    }
}

/// When the tunnel last moved a byte, shared by both directions.
struct Clock {
    start: Instant,
    idle: Duration,
    last_ms: AtomicU64,
}

impl Clock {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn deadline(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + self.idle
    }

    /// Waits for `ready`, or fails with `TimedOut` once neither direction
    /// has moved a byte for `idle`. `sleep` is this direction's one timer:
    /// it is moved only when it fires early, not on every byte.
    async fn wait(&self, ready: impl Future<Output = io::Result<()>>, sleep: &mut Pin<&mut Sleep>) -> io::Result<()> {
        tokio::pin!(ready);
        loop {
            tokio::select! {
                biased;
                r = &mut ready => return r,
                () = sleep.as_mut() => {
                    let deadline = self.deadline();
                    if deadline <= Instant::now() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    sleep.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// One direction: `src` to `dst` until `src`'s end of file, then the
/// half-close is carried to `dst`.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    clock: &Clock,
    gate: Option<impl FnMut(&[u8]) -> Gate>,
    mut meter: Meter<'_>,
) -> io::Result<u64> {
    let sleep = tokio::time::sleep_until(clock.deadline());
    tokio::pin!(sleep);
    let mut total = 0u64;
    if let Some(check) = gate {
        match gated(src, dst, clock, &mut sleep, check).await? {
            Some(n) => total = n,
            None => {
                shut_write(dst);
                return Ok(0);
            }
        }
    }
    let result = pump_rest(src, dst, clock, &mut sleep, &mut total, &mut meter).await;
    meter.update(total);
    result.map(|()| total)
}

/// The rest of [`pump`]: everything after the gate.
async fn pump_rest(
    src: &TcpStream,
    dst: &TcpStream,
    clock: &Clock,
    sleep: &mut Pin<&mut Sleep>,
    total: &mut u64,
    meter: &mut Meter<'_>,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    let mut splicing = true;
    // The buffered path's buffer, allocated only when that path runs.
    let mut buf = Vec::new();
    loop {
        meter.update(*total);
        #[cfg(target_os = "linux")]
        if splicing {
            match splice::burst(src, dst, clock, sleep, total).await? {
                splice::Burst::Drained => continue,
                splice::Burst::Eof => break,
                splice::Burst::Unsupported => splicing = false,
                // Out of descriptors: copy this chunk, try a pipe again next.
                splice::Burst::NoPipe => {}
            }
        }
        if buf.is_empty() {
            buf = vec![0u8; BUF];
        }
        let n = read_some(src, &mut buf, clock, sleep).await?;
        if n == 0 {
            break;
        }
        write_all(dst, &buf[..n], clock, sleep).await?;
        *total += n as u64;
        #[cfg(target_os = "linux")]
        if splicing {
            buf = Vec::new();
        }
    }
    // Carry the half-close and let the other direction finish.
    shut_write(dst);
    Ok(())
}

/// Holds the client's first bytes until `check` decides, then writes them
/// to `dst`. `None`: the client closed before sending anything.
async fn gated(
    src: &TcpStream,
    dst: &TcpStream,
    clock: &Clock,
    sleep: &mut Pin<&mut Sleep>,
    mut check: impl FnMut(&[u8]) -> Gate,
) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; BUF];
    let mut held = Vec::new();
    loop {
        let n = read_some(src, &mut buf, clock, sleep).await?;
        if n == 0 {
            if held.is_empty() {
                return Ok(None);
            }
            return Err(refused("client closed before its first bytes could be checked".into()));
        }
        held.extend_from_slice(&buf[..n]);
        match check(&held) {
            Gate::NeedMore if held.len() < GATE_LIMIT => {}
            Gate::NeedMore => return Err(refused("first bytes could not be checked".into())),
            Gate::Refuse(why) => return Err(refused(why)),
            Gate::Pass => break,
        }
    }
    write_all(dst, &held, clock, sleep).await?;
    Ok(Some(held.len() as u64))
}

async fn read_some(src: &TcpStream, buf: &mut [u8], clock: &Clock, sleep: &mut Pin<&mut Sleep>) -> io::Result<usize> {
    loop {
        clock.wait(src.readable(), sleep).await?;
        match src.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            read => return read,
        }
    }
}

async fn write_all(dst: &TcpStream, mut bytes: &[u8], clock: &Clock, sleep: &mut Pin<&mut Sleep>) -> io::Result<()> {
    while !bytes.is_empty() {
        clock.wait(dst.writable(), sleep).await?;
        match dst.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                clock.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends `dst`'s sending side; the peer may already be gone (nothing to do).
fn shut_write(dst: &TcpStream) {
    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::pin::Pin;
    use std::sync::{Mutex, PoisonError};

    use rustix::io::Errno;
    use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
    use tokio::io::Interest;
    use tokio::net::TcpStream;
    use tokio::time::Sleep;

    use super::Clock;

    /// Capacity asked for each pipe: fewer splice calls per megabyte.
    const PIPE_SIZE: usize = 256 * 1024;
    /// Capacity of a pipe when resizing it is refused.
    const DEFAULT_PIPE_SIZE: usize = 64 * 1024;
    /// Empty pipes kept for the next burst of any tunnel (two descriptors
    /// each); more are closed when returned.
    const POOL_MAX: usize = 16;

    const FLAGS: SpliceFlags = SpliceFlags::NONBLOCK.union(SpliceFlags::MOVE);

    static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

    /// How a burst ended.
    pub(super) enum Burst {
        /// The source has nothing more for now; everything read was written.
        Drained,
        /// The source's end of file; everything read was written.
        Eof,
        /// No pipe could be had (descriptor limit): nothing was moved.
        NoPipe,
        /// `splice` refuses these sockets: nothing was moved.
        Unsupported,
    }

    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        size: usize,
    }

    impl Pipe {
        fn take() -> io::Result<Pipe> {
            if let Some(pipe) = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop() {
                return Ok(pipe);
            }
            let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            let size = fcntl_setpipe_size(&write, PIPE_SIZE).unwrap_or(DEFAULT_PIPE_SIZE);
            Ok(Pipe { read, write, size })
        }

        /// Only an empty pipe may be returned: the next user would send
        /// what it still holds.
        fn give_back(self) {
            let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < POOL_MAX {
                pool.push(self);
            }
        }
    }

    /// Waits until `src` has bytes, then splices them to `dst` (draining the
    /// pipe fully before reading more) until `src` has no more for now.
    /// A failure may leave bytes in the pipe: it is then closed, never pooled.
    pub(super) async fn burst(
        src: &TcpStream,
        dst: &TcpStream,
        clock: &Clock,
        sleep: &mut Pin<&mut Sleep>,
        total: &mut u64,
    ) -> io::Result<Burst> {
        clock.wait(src.readable(), sleep).await?;
        let Ok(pipe) = Pipe::take() else {
            return Ok(Burst::NoPipe);
        };
        loop {
            // The pipe is empty here, so WouldBlock can only be the socket's.
            let n = match src.try_io(Interest::READABLE, || {
                Ok(splice(src, None, &pipe.write, None, pipe.size, FLAGS)?)
            }) {
                Ok(0) => {
                    pipe.give_back();
                    return Ok(Burst::Eof);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pipe.give_back();
                    return Ok(Burst::Drained);
                }
                Err(e) if unsupported(&e) => {
                    pipe.give_back();
                    return Ok(Burst::Unsupported);
                }
                Err(e) => return Err(e),
            };
            let mut pending = n;
            while pending > 0 {
                clock.wait(dst.writable(), sleep).await?;
                match dst.try_io(Interest::WRITABLE, || {
                    Ok(splice(&pipe.read, None, dst, None, pending, FLAGS)?)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => {
                        pending -= m;
                        *total += m as u64;
                        clock.touch();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    fn unsupported(e: &io::Error) -> bool {
        let code = e.raw_os_error();
        code == Some(Errno::INVAL.raw_os_error()) || code == Some(Errno::NOSYS.raw_os_error())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// Two connected loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// The client's and the upstream's ends of a tunnel relayed in the
    /// background (the relay's own sockets close when it ends).
    async fn tunnel(
        idle: Duration,
        gate: Option<fn(&[u8]) -> Gate>,
    ) -> (TcpStream, TcpStream, JoinHandle<io::Result<Relayed>>) {
        let (client, mut proxy_client) = pair().await;
        let (mut proxy_upstream, upstream) = pair().await;
        let relay = tokio::spawn(async move {
            match gate {
                Some(g) => relay_gated(&mut proxy_client, &mut proxy_upstream, idle, g).await,
                None => relay(&mut proxy_client, &mut proxy_upstream, idle).await,
            }
        });
        (client, upstream, relay)
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// Writes `data` then half-closes, while reading everything the peer sends.
    async fn exchange(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
            w
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        drop(writer.await.unwrap());
        got
    }

    const IDLE: Duration = Duration::from_secs(10);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn megabytes_both_ways_at_once_arrive_intact() {
        let (client, upstream, relay) = tunnel(IDLE, None).await;
        let (up, down) = (pattern(6 << 20, 1), pattern(5 << 20, 2));
        let (at_upstream, at_client) = tokio::join!(exchange(upstream, down.clone()), exchange(client, up.clone()));
        assert!(at_upstream == up, "upload differs");
        assert!(at_client == down, "download differs");
        let relayed = relay.await.unwrap().unwrap();
        assert_eq!(
            relayed,
            Relayed {
                sent: up.len() as u64,
                received: down.len() as u64
            }
        );
    }

    #[tokio::test]
    async fn half_closed_client_receives_the_whole_answer() {
        let (mut client, mut upstream, relay) = tunnel(IDLE, None).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut req = Vec::new();
        upstream.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"request");
        // Answered only after the client's half-close reached the upstream.
        let answer = pattern(3 << 20, 3);
        let sender = {
            let answer = answer.clone();
            tokio::spawn(async move {
                upstream.write_all(&answer).await.unwrap();
                upstream.shutdown().await.unwrap();
                upstream
            })
        };
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got == answer, "answer differs");
        drop(sender.await.unwrap());
        let relayed = relay.await.unwrap().unwrap();
        assert_eq!(
            relayed,
            Relayed {
                sent: 7,
                received: answer.len() as u64
            }
        );
    }

    #[tokio::test]
    async fn upstream_may_speak_first() {
        for gate in [None, Some((|_: &[u8]| Gate::Pass) as fn(&[u8]) -> Gate)] {
            let (mut client, mut upstream, relay) = tunnel(IDLE, gate).await;
            upstream.write_all(b"220 hello\r\n").await.unwrap();
            let mut banner = [0u8; 11];
            client.read_exact(&mut banner).await.unwrap();
            assert_eq!(&banner, b"220 hello\r\n");
            client.write_all(b"QUIT\r\n").await.unwrap();
            let mut quit = [0u8; 6];
            upstream.read_exact(&mut quit).await.unwrap();
            assert_eq!(&quit, b"QUIT\r\n");
            drop((client, upstream));
            let relayed = relay.await.unwrap().unwrap();
            assert_eq!(relayed, Relayed { sent: 6, received: 11 });
        }
    }

    #[tokio::test]
    async fn idle_tunnel_times_out() {
        let idle = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let (_client, _upstream, relay) = tunnel(idle, None).await;
        let err = relay.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= idle && took < Duration::from_secs(3),
            "timed out after {took:?}"
        );
    }

    #[tokio::test]
    async fn traffic_one_way_keeps_the_tunnel_open() {
        let idle = Duration::from_millis(300);
        let (mut client, mut upstream, relay) = tunnel(idle, None).await;
        // Only the upstream talks, for several idle periods; the client's
        // direction stays silent throughout.
        let mut last = std::time::Instant::now();
        for i in 0..20u8 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            upstream.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            client.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
            last = std::time::Instant::now();
        }
        assert!(!relay.is_finished(), "timed out while bytes flowed");
        let err = relay.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Counted from the last byte moved (to the millisecond).
        let quiet = last.elapsed();
        assert!(
            quiet + Duration::from_millis(2) >= idle,
            "timed out {quiet:?} after the last byte"
        );
    }

    /// Passes once a whole line is in; refuses a line starting with "BAD".
    fn line_gate(held: &[u8]) -> Gate {
        match held.iter().position(|&b| b == b'\n') {
            None => Gate::NeedMore,
            Some(_) if held.starts_with(b"BAD") => Gate::Refuse("bad line".into()),
            Some(_) => Gate::Pass,
        }
    }

    #[tokio::test]
    async fn refused_bytes_never_reach_the_upstream() {
        let (mut client, mut upstream, relay) = tunnel(IDLE, Some(line_gate)).await;
        client.write_all(b"BA").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"D request\nmore").await.unwrap();
        let err = relay.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(err.to_string(), "bad line");
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "upstream received {} bytes", got.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passed_bytes_and_all_after_arrive() {
        let (mut client, upstream, relay) = tunnel(IDLE, Some(line_gate)).await;
        let mut sent = b"GET".to_vec();
        client.write_all(&sent).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rest = [b" / line\n".as_slice(), &pattern(4 << 20, 4)].concat();
        sent.extend_from_slice(&rest);
        let (at_upstream, at_client) = tokio::join!(exchange(upstream, b"answer".to_vec()), async {
            client.write_all(&rest).await.unwrap();
            exchange(client, Vec::new()).await
        });
        assert!(at_upstream == sent, "upload differs");
        assert_eq!(at_client, b"answer");
        let relayed = relay.await.unwrap().unwrap();
        assert_eq!(
            relayed,
            Relayed {
                sent: sent.len() as u64,
                received: 6
            }
        );
    }
}
