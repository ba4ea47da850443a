//! The loopback upstreams, served from this process on 127.0.0.1:0:
//!
//! | server | protocol |
//! |---|---|
//! | echo | every byte back; end of stream carried back |
//! | sink | 64 KiB blocks; a block starting with 0xFF is the last one, answered with the byte count (u64, big-endian) |
//! | source | reads `N\n`, then waits for the client's end of stream (half-close), then sends N bytes and closes |
//! | source, streaming | reads `for MS\n`, sends 64 KiB blocks of 0xA5 for MS milliseconds, then their byte count (u64, big-endian), and closes |
//! | web | HTTP/1.1 keep-alive, 64-byte body for every GET; `CONNECT` is answered 403 (the direct path's refusal) |
//! | idle echo | the echo, in a child process (`--serve-echo`), for the idle tunnels |
//! | dns | UDP, authoritative: `*.cached.bench` and `*.static.bench` A 1.2.3.4, everything else NXDOMAIN |

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::dns;

/// Size of one sink block.
pub const BLOCK: usize = 64 * 1024;
/// First byte of the sink's last block.
pub const LAST_BLOCK: u8 = 0xFF;
/// Every byte of a streamed block: never the low byte of a count (a
/// multiple of [`BLOCK`]), so a cut stream cannot pass for a finished one.
pub const STREAM_BYTE: u8 = 0xA5;
/// The web server's response body.
pub const BODY: &[u8; 64] = b"secureops-bench http body: 0123456789abcdefghijklmnopqrstuvwxyz\n";
/// The byte at offset `i` of the source's answer.
pub fn source_byte(i: u64) -> u8 {
    b'a' + (i % 26) as u8
}
/// How long the source waits for the client's end of stream.
const HALF_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Addresses of the running upstreams.
#[derive(Debug, Clone, Copy)]
pub struct Upstreams {
    /// TCP echo.
    pub echo: SocketAddr,
    /// TCP byte counter.
    pub sink: SocketAddr,
    /// Half-close source.
    pub source: SocketAddr,
    /// HTTP/1.1 server.
    pub web: SocketAddr,
    /// Authoritative DNS (UDP).
    pub dns: SocketAddr,
}

impl Upstreams {
    /// Binds and serves every upstream on this runtime.
    pub async fn start() -> std::io::Result<Self> {
        Ok(Self {
            echo: serve(echo).await?,
            sink: serve(sink).await?,
            source: serve(source).await?,
            web: serve(web).await?,
            dns: serve_dns().await?,
        })
    }
}

/// Serves only the echo upstream (the idle case's own process, so that
/// the benchmark holds only the client ends of the idle tunnels).
pub async fn serve_echo() -> std::io::Result<SocketAddr> {
    serve(echo).await
}

async fn serve<F, Fut>(handler: F) -> std::io::Result<SocketAddr>
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener: TcpListener = socket.listen(4096)?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let fut = handler(stream);
                    tokio::spawn(async move {
                        let _ = fut.await;
                    });
                }
                // Out of descriptors and the like: wait instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    Ok(addr)
}

async fn echo(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s.shutdown().await;
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn sink(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; BLOCK];
    let mut count: u64 = 0;
    loop {
        s.read_exact(&mut buf).await?;
        count += BLOCK as u64;
        if buf[0] == LAST_BLOCK {
            s.write_all(&count.to_be_bytes()).await?;
            // Wait for the client to close (bounded), so it reads the count.
            let _ = tokio::time::timeout(HALF_CLOSE_WAIT, s.read(&mut buf[..1])).await;
            return Ok(());
        }
    }
}

async fn source(mut s: TcpStream) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 1];
    loop {
        if s.read(&mut byte).await? == 0 {
            return Ok(());
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > 20 {
            return Ok(());
        }
    }
    let line = String::from_utf8_lossy(&line);
    if let Some(ms) = line.trim().strip_prefix("for ").and_then(|ms| ms.parse::<u64>().ok()) {
        return stream_for(s, Duration::from_millis(ms)).await;
    }
    let Ok(n) = line.trim().parse::<u64>() else {
        return Ok(());
    };
    // Only once the client's end of stream has come through: the answer is
    // what a half-closed client must still receive.
    match tokio::time::timeout(HALF_CLOSE_WAIT, s.read(&mut byte)).await {
        Ok(Ok(0)) => {}
        _ => return Ok(()),
    }
    let mut chunk = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    while sent < n {
        let len = (n - sent).min(chunk.len() as u64) as usize;
        for (i, b) in chunk[..len].iter_mut().enumerate() {
            *b = source_byte(sent + i as u64);
        }
        s.write_all(&chunk[..len]).await?;
        sent += len as u64;
    }
    s.shutdown().await
}

/// The download: blocks for `length`, then the count of their bytes.
async fn stream_for(mut s: TcpStream, length: Duration) -> std::io::Result<()> {
    let until = tokio::time::Instant::now() + length;
    let block = vec![STREAM_BYTE; BLOCK];
    let mut sent = 0u64;
    while tokio::time::Instant::now() < until {
        s.write_all(&block).await?;
        sent += BLOCK as u64;
    }
    s.write_all(&sent.to_be_bytes()).await?;
    s.shutdown().await
}

async fn web(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let (len, connect, close, body) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let connect = req.method == Some("CONNECT");
                    let header = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                    };
                    let conn = header("connection").unwrap_or_default();
                    let close = conn.contains("close") || (req.version == Some(0) && !conn.contains("keep-alive"));
                    let body = header("content-length")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (len, connect, close, body);
                }
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
                _ => return Ok(()),
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if connect {
            let body = b"direct: CONNECT refused\n";
            let head = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(&[head.as_bytes(), body].concat()).await?;
            s.shutdown().await?;
            // Read what the client still sends until it closes (bounded).
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while s.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
            })
            .await;
            return Ok(());
        }
        // Request bodies are not expected; skip one if it comes.
        let mut skip = len + body;
        while buf.len() < skip {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        skip = skip.min(buf.len());
        buf.drain(..skip);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: no-store\r\nContent-Length: {}\r\n{}\r\n",
            BODY.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        s.write_all(&[head.as_bytes(), BODY.as_slice()].concat()).await?;
        if close {
            return s.shutdown().await;
        }
    }
}

async fn serve_dns() -> std::io::Result<SocketAddr> {
    let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let mut out = Vec::with_capacity(512);
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if dns::authoritative_answer(&buf[..n], &mut out) {
                let _ = socket.send_to(&out, from).await;
            }
        }
    });
    Ok(addr)
}
