//! The load generator's client side: raw CONNECT and HTTP/1.1 over tokio
//! sockets, one operation per function, every answer checked.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::upstream::{BLOCK, BODY, LAST_BLOCK, Upstreams, source_byte};

/// The 64-byte message of the echo exchange (plain text: not a TLS
/// ClientHello, so the proxy's SNI peek lets it through at once).
pub const PING: &[u8; 64] = b"secureops-bench echo ping 0123456789abcdefghijklmnopqrstuvwxyz.\n";
/// Longest response head read.
const MAX_HEAD: usize = 64 * 1024;

/// How a target names the upstreams in its CONNECT lines and URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `echo.bench:PORT` and friends: names from the proxy's `[dns] hosts`.
    Names,
    /// `127.0.0.1:PORT`: for proxies that resolve through /etc/hosts,
    /// which the benchmark does not edit.
    Ip,
}

/// One way to reach the upstreams: straight, or through a proxy.
#[derive(Debug, Clone)]
pub struct Target {
    /// `direct`, `secureops`, `tinyproxy`, `squid`, ...
    pub name: String,
    /// The proxy's address; `None` for the direct path.
    pub proxy: Option<SocketAddr>,
    /// The proxy's process, for memory and CPU figures.
    pub pid: Option<u32>,
    /// How upstreams are named through this proxy.
    pub naming: Naming,
    /// Whether a failed check on this target fails the benchmark (the
    /// direct path and secureops; other proxies' failures are findings).
    pub strict: bool,
}

/// Which upstream an operation talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    /// TCP echo.
    Echo,
    /// Byte counter.
    Sink,
    /// Half-close source.
    Source,
    /// HTTP server.
    Web,
    /// The echo of the idle case, in its own process.
    IdleEcho,
}

/// Shared by every operation: the upstreams and the names of things.
#[derive(Debug)]
pub struct Ctx {
    /// Upstream addresses.
    pub up: Upstreams,
    /// The idle case's echo (another process), when it runs.
    pub idle_echo: Option<SocketAddr>,
}

impl Ctx {
    /// The upstream's socket address.
    pub fn addr(&self, up: Up) -> SocketAddr {
        match up {
            Up::Echo => self.up.echo,
            Up::Sink => self.up.sink,
            Up::Source => self.up.source,
            Up::Web => self.up.web,
            Up::IdleEcho => self.idle_echo.unwrap_or(self.up.echo),
        }
    }

    /// `host:port` of `up` as `target` names it.
    pub fn authority(&self, target: &Target, up: Up) -> String {
        let port = self.addr(up).port();
        match target.naming {
            Naming::Ip => format!("127.0.0.1:{port}"),
            Naming::Names => {
                let name = match up {
                    Up::Echo => "echo",
                    Up::Sink => "sink",
                    Up::Source => "source",
                    Up::Web => "web",
                    Up::IdleEcho => "idle",
                };
                format!("{name}.bench:{port}")
            }
        }
    }

    /// The CONNECT target that every proxy must refuse.
    pub fn denied_authority(&self) -> String {
        format!("denied.bench:{}", self.up.echo.port())
    }
}

/// A TCP stream and the bytes read past the last parsed head.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Read ahead, not consumed yet.
    pub buf: Vec<u8>,
}

impl Conn {
    /// Connects (no Nagle: every exchange here is small and latency-bound).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    async fn fill(&mut self) -> anyhow::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads a response head; returns (status, Content-Length, keep-alive).
    /// The head is consumed, what follows stays in the buffer.
    pub async fn read_response_head(&mut self) -> anyhow::Result<(u16, Option<usize>, bool)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    let header = |name: &str| {
                        resp.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                    };
                    let length = header("content-length").and_then(|v| v.trim().parse().ok());
                    let conn = header("connection")
                        .or_else(|| header("proxy-connection"))
                        .unwrap_or_default();
                    let keep_alive = if resp.version == Some(0) {
                        conn.contains("keep-alive")
                    } else {
                        !conn.contains("close")
                    };
                    self.buf.drain(..len);
                    return Ok((status, length, keep_alive));
                }
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => bail!("response head over {MAX_HEAD} bytes"),
                Err(e) => bail!("bad response head: {e}"),
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() {
                    bail!("connection closed before any response");
                }
                bail!("connection closed mid-head");
            }
        }
    }

    /// Reads exactly `n` bytes (buffered first).
    pub async fn read_n(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                bail!("connection closed after {} of {n} bytes", self.buf.len());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads until end of stream, at most `max` bytes; returns the count.
    pub async fn drain_to_end(&mut self, max: usize) -> anyhow::Result<usize> {
        let mut total = self.buf.len();
        self.buf.clear();
        let mut chunk = vec![0u8; 16 * 1024];
        while total <= max {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
        bail!("more than {max} bytes");
    }
}

/// Opens a byte stream to `up` the way `target` reaches it: a plain
/// connection (direct) or `CONNECT` answered 200.
pub async fn open(ctx: &Ctx, target: &Target, up: Up) -> anyhow::Result<Conn> {
    let Some(proxy) = target.proxy else {
        return Conn::connect(ctx.addr(up)).await;
    };
    let mut c = Conn::connect(proxy).await?;
    let authority = ctx.authority(target, up);
    c.stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let (status, _, _) = c.read_response_head().await.context("CONNECT")?;
    if status != 200 {
        bail!("CONNECT {authority}: status {status}");
    }
    Ok(c)
}

/// Tunnel setup: CONNECT → 200 → 64-byte echo → close.
pub async fn echo_once(ctx: Arc<Ctx>, target: Arc<Target>) -> anyhow::Result<u64> {
    let mut c = open(&ctx, &target, Up::Echo).await?;
    c.stream.write_all(PING).await?;
    let got = c.read_n(PING.len()).await.context("echo")?;
    if got != PING {
        bail!("echo came back different");
    }
    Ok(PING.len() as u64)
}

/// A CONNECT to `denied.bench` must be answered 403 (for the direct path,
/// by the web upstream, which refuses every CONNECT). Reads the refusal's
/// body, then closes.
pub async fn refused_once(ctx: Arc<Ctx>, target: Arc<Target>) -> anyhow::Result<u64> {
    let mut c = Conn::connect(target.proxy.unwrap_or(ctx.up.web)).await?;
    let authority = ctx.denied_authority();
    c.stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let (status, length, _) = c.read_response_head().await.context("refusal")?;
    if status != 403 {
        bail!("CONNECT {authority}: status {status}, not 403");
    }
    match length {
        Some(n) if n <= MAX_HEAD => {
            c.read_n(n).await?;
        }
        _ => {
            c.drain_to_end(MAX_HEAD).await?;
        }
    }
    Ok(0)
}

/// Bulk: one tunnel to the sink, 64 KiB blocks until `until`, then the
/// last block; the sink's byte count must equal what was sent. Returns
/// the bytes sent; `lost` gets what the sink did not count.
pub async fn bulk_once(
    ctx: Arc<Ctx>,
    target: Arc<Target>,
    until: tokio::time::Instant,
    lost: &mut u64,
) -> anyhow::Result<u64> {
    let mut c = open(&ctx, &target, Up::Sink).await?;
    let mut block = vec![0u8; BLOCK];
    for (i, b) in block.iter_mut().enumerate().skip(1) {
        *b = (i % 251) as u8;
    }
    let mut sent = 0u64;
    while tokio::time::Instant::now() < until {
        c.stream.write_all(&block).await?;
        sent += BLOCK as u64;
    }
    block[0] = LAST_BLOCK;
    c.stream.write_all(&block).await?;
    sent += BLOCK as u64;
    let count = c.read_n(8).await.context("sink count")?;
    let mut be = [0u8; 8];
    be.copy_from_slice(&count);
    let counted = u64::from_be_bytes(be);
    if counted != sent {
        *lost += sent.saturating_sub(counted);
        bail!("sent {sent} bytes, sink counted {counted}");
    }
    Ok(sent)
}

/// Bulk download: the source streams 64 KiB blocks until `until`, then
/// their byte count; every byte must arrive. Returns the bytes received;
/// `lost` gets what the source sent and did not arrive.
pub async fn download_once(
    ctx: Arc<Ctx>,
    target: Arc<Target>,
    until: tokio::time::Instant,
    lost: &mut u64,
) -> anyhow::Result<u64> {
    let mut c = open(&ctx, &target, Up::Source).await?;
    let ms = until.saturating_duration_since(tokio::time::Instant::now()).as_millis();
    c.stream.write_all(format!("for {ms}\n").as_bytes()).await?;
    // Everything is body but the last 8 bytes (the count).
    let mut total = c.buf.len() as u64;
    let mut tail = std::mem::take(&mut c.buf);
    let mut chunk = vec![0u8; BLOCK];
    loop {
        let n = c.stream.read(&mut chunk).await.context("download")?;
        if n == 0 {
            break;
        }
        total += n as u64;
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > 8 {
            tail.drain(..tail.len() - 8);
        }
    }
    let Ok(count) = <[u8; 8]>::try_from(tail.as_slice()) else {
        bail!("download ended after {total} bytes, without its count");
    };
    let (sent, got) = (u64::from_be_bytes(count), total - 8);
    if sent % BLOCK as u64 != 0 || got % BLOCK as u64 != 0 {
        bail!("download cut off after {total} bytes (no byte count at its end)");
    }
    if got != sent {
        *lost += sent.saturating_sub(got);
        bail!("source sent {sent} bytes, {got} arrived");
    }
    Ok(got)
}

/// Half-close: ask the source for `n` bytes, shut down our sending side,
/// read to end of stream; every byte must arrive, in order. Returns the
/// bytes received; `lost` gets the missing ones.
pub async fn half_close_once(ctx: Arc<Ctx>, target: Arc<Target>, n: u64, lost: &mut u64) -> anyhow::Result<u64> {
    let mut c = open(&ctx, &target, Up::Source).await?;
    c.stream.write_all(format!("{n}\n").as_bytes()).await?;
    c.stream.shutdown().await?;
    let mut got = 0u64;
    let mut bad = None;
    let mut check = |bytes: &[u8], got: &mut u64| {
        for &b in bytes {
            if bad.is_none() && b != source_byte(*got) {
                bad = Some(*got);
            }
            *got += 1;
        }
    };
    let pending = std::mem::take(&mut c.buf);
    check(&pending, &mut got);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match c.stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(k) => check(&chunk[..k], &mut got),
            Err(e) => {
                *lost += n.saturating_sub(got);
                bail!("after {got} of {n} bytes: {e}");
            }
        }
    }
    if got != n {
        *lost += n.saturating_sub(got);
        bail!("half-closed client received {got} of {n} bytes");
    }
    if let Some(at) = bad {
        bail!("byte {at} corrupted");
    }
    Ok(got)
}

/// One keep-alive HTTP client: the connection it holds between requests.
#[derive(Debug, Default)]
pub struct HttpClient {
    conn: Option<Conn>,
}

impl HttpClient {
    /// One GET of the 64-byte body (absolute-form through a proxy,
    /// origin-form direct), on the held connection when there is one.
    /// Returns the body length; `reconnects` counts connections opened
    /// again because the last answer closed or the peer went away.
    pub async fn get(&mut self, ctx: &Ctx, target: &Target, reconnects: &mut u64) -> anyhow::Result<u64> {
        let authority = ctx.authority(target, Up::Web);
        let request = match target.proxy {
            Some(_) => format!("GET http://{authority}/bench HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
            None => format!("GET /bench HTTP/1.1\r\nHost: {authority}\r\n\r\n"),
        };
        let reused = self.conn.is_some();
        match self.exchange(ctx, target, &request).await {
            Ok(n) => Ok(n),
            // A keep-alive connection the peer had closed: once more on a
            // fresh one.
            Err(_) if reused => {
                *reconnects += 1;
                self.conn = None;
                self.exchange(ctx, target, &request).await
            }
            Err(e) => Err(e),
        }
    }

    async fn exchange(&mut self, ctx: &Ctx, target: &Target, request: &str) -> anyhow::Result<u64> {
        let mut c = match self.conn.take() {
            Some(c) => c,
            None => Conn::connect(target.proxy.unwrap_or(ctx.up.web)).await?,
        };
        c.stream.write_all(request.as_bytes()).await?;
        let (status, length, keep_alive) = c.read_response_head().await?;
        if status != 200 {
            bail!("GET: status {status}");
        }
        let body = match length {
            Some(n) => c.read_n(n).await?,
            None => bail!("GET: response without Content-Length"),
        };
        if body != BODY {
            bail!("GET: body differs");
        }
        if keep_alive {
            self.conn = Some(c);
        }
        Ok(body.len() as u64)
    }

    /// Whether the next request will open a new connection.
    pub fn needs_connect(&self) -> bool {
        self.conn.is_none()
    }
}
