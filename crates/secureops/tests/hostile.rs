//! Hostile clients at once (issue 20, item 3): slowloris clients, idle
//! tunnels, clients flooding denied CONNECTs and clients flooding malformed
//! DNS packets, all against one real `secureops proxy` on loopback, while a
//! good client keeps opening tunnels and asking DNS questions.
//!
//! Every good operation must succeed; the proxy's descriptors and resident
//! memory (from `/proc/PID`) must stay under limits derived from
//! `max_connections`; over `max_connections` a client gets 503, and once
//! connections close the proxy serves again.
//!
//! CI runs reduced counts (100 slowloris, 500 idle tunnels, 8 + 4
//! flooders, 12 s); `SECUREOPS_HOSTILE_FULL=1` runs the full ones (1 000,
//! 5 000, 64 + 32, 30 s) and wants the release build that ships
//! (`cargo test --release`): a debug build's sinkhole cannot keep up with
//! 32 DNS flooders on 2 cores (`SECUREOPS_HOSTILE_DNS_FLOODERS=8` there).
//! `--nocapture` prints the figures measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How many of each, and for how long.
#[derive(Debug, Clone, Copy)]
struct Counts {
    slowloris: usize,
    idle: usize,
    deny_flooders: usize,
    dns_flooders: usize,
    hostile_for: Duration,
}

impl Counts {
    fn from_env() -> Counts {
        if std::env::var_os("SECUREOPS_HOSTILE_FULL").is_some() {
            Counts {
                slowloris: 1000,
                idle: 5000,
                deny_flooders: 64,
                dns_flooders: 32,
                hostile_for: Duration::from_secs(30),
            }
        } else {
            Counts {
                slowloris: 100,
                idle: 500,
                deny_flooders: 8,
                dns_flooders: 4,
                hostile_for: Duration::from_secs(12),
            }
        }
    }

    /// `max_connections` for the run: every hostile client at once and a
    /// quarter more (a client that closed holds its slot until the proxy's
    /// task for it ends, which lags on a busy machine), and room for the
    /// good client.
    fn max_connections(&self) -> usize {
        (self.slowloris + self.idle + self.deny_flooders) * 5 / 4 + 64
    }
}

/// What the proxy may hold at most, derived from `max_connections`: two
/// descriptors per connection (client and upstream socket; a tunnel moving
/// bulk bytes borrows a pipe pair) plus 256 of its own; resident memory of
/// 64 MiB plus 48 KiB per connection (a debug build; the release build
/// measures about 8 KiB per idle tunnel, see README "Limits").
fn fd_limit(max_connections: usize) -> u64 {
    2 * max_connections as u64 + 256
}

fn rss_limit_kib(max_connections: usize) -> u64 {
    64 * 1024 + 48 * max_connections as u64
}

/// Open descriptors and resident memory (KiB) of `pid`.
fn usage(pid: u32) -> (u64, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Raises this process's soft open-file limit to the hard one; returns it.
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: cur.maximum,
            maximum: cur.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn config(max_connections: usize) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
max_connections = {max_connections}
header_timeout_ms = 5000
[network]
egress_allowlist = ["echo.test:*"]
private_destinations = ["127.0.0.0/8"]
[dns]
upstream = []
hosts = {{ "echo.test" = ["127.0.0.1"], "denied.test" = ["127.0.0.1"] }}
"#
    )
}

/// A tokio echo upstream that keeps every connection open until its peer
/// closes it.
async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Reads a response head; returns its status (0 when none came) and the
/// whole text read.
async fn read_head(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Opens a tunnel to the echo upstream and checks that a byte comes back
/// (so its audit entry is written and it is relaying); `Err` says why not.
async fn open_tunnel(proxy: SocketAddr, echo: SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let req = format!("CONNECT echo.test:{} HTTP/1.1\r\n\r\n", echo.port());
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let (status, text) = read_head(&mut s).await;
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    if !echoes(&mut s, b"x").await {
        return Err("no echo".into());
    }
    Ok(s)
}

async fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.is_ok() && back == msg
}

/// A slowloris client: one byte of a request head per second, again and
/// again after each cut-off, until `stop`.
async fn slowloris(proxy: SocketAddr, stop: Arc<AtomicBool>, cut: Arc<AtomicU64>) {
    let head = b"GET http://echo.test/ HTTP/1.1\r\nHost: echo.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        for b in head {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            // Cut off (408) while dripping: start again.
            let mut probe = [0u8; 64];
            if tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe))
                .await
                .is_ok()
            {
                cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// A client flooding denied CONNECTs; counts the 403s it got.
async fn deny_flooder(proxy: SocketAddr, canary: u16, stop: Arc<AtomicBool>, refused: Arc<AtomicU64>) {
    let req = format!("CONNECT denied.test:{canary} HTTP/1.1\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(proxy).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if s.write_all(req.as_bytes()).await.is_err() {
            continue;
        }
        if let Ok((403, _)) = tokio::time::timeout(Duration::from_secs(10), read_head(&mut s)).await {
            refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A client on its own loopback address flooding malformed DNS packets.
async fn dns_flooder(dns: SocketAddr, n: u8, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 1, n), 0)).await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(n);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let packet: Vec<u8> = match i % 4 {
            // Random bytes.
            0 => (0..next() % 512).map(|_| next() as u8).collect(),
            // A truncated header.
            1 => vec![0x12, 0x34, 0x01],
            // A header that promises a question that is not there.
            2 => vec![0x12, 0x35, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
            // A name that points at itself.
            _ => vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
        };
        if socket.send_to(&packet, dns).await.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        i += 1;
        if i.is_multiple_of(32) {
            // Bounded: about 1 000 packets per second per flooder at most.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

/// One DNS question from the good client: `echo.test` must answer
/// 127.0.0.1. Like a stub resolver it sends the question again after a
/// second without an answer (a flood can fill the sinkhole's socket
/// buffer, and the kernel then drops datagrams, whoever sent them), at most
/// 5 times; returns how many sends it took.
async fn good_dns(socket: &UdpSocket, dns: SocketAddr, id: u16) -> Result<u32, String> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii("echo.test.").unwrap(), RecordType::A));
    let query = m.to_vec().unwrap();
    let mut buf = [0u8; 1500];
    for sends in 1..=5 {
        socket.send_to(&query, dns).await.map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                let Ok((n, _)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                match Message::from_vec(&buf[..n]) {
                    Ok(a) if a.metadata.id == id => return a,
                    _ => continue,
                }
            }
        })
        .await;
        let Ok(answer) = answer else { continue };
        let ok = answer.metadata.response_code == ResponseCode::NoError
            && answer
                .answers
                .iter()
                .any(|r| matches!(&r.data, RData::A(a) if a.0 == Ipv4Addr::LOCALHOST));
        return if ok { Ok(sends) } else { Err(format!("{answer:?}")) };
    }
    Err("no answer to 5 sends".into())
}

/// What the run measured.
struct Report {
    text: String,
    peak_fds: u64,
    peak_rss: u64,
    refused: u64,
    junk: u64,
}

#[test]
fn hostile_clients_at_once_do_not_stop_a_good_client() {
    let mut counts = Counts::from_env();
    // To tell the DNS flood's effect from the others' (see the note on
    // the full run in README "Limits").
    if let Some(n) = std::env::var("SECUREOPS_HOSTILE_DNS_FLOODERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        counts.dns_flooders = n;
    }
    let nofile = raise_nofile();
    // This process holds both ends of every tunnel when the slots are
    // filled at the end.
    let need = 2 * counts.max_connections() as u64 + 512;
    if need > nofile {
        let scale = nofile.saturating_sub(1024) as f64 / need as f64;
        counts.idle = (counts.idle as f64 * scale) as usize;
        counts.slowloris = (counts.slowloris as f64 * scale) as usize;
        eprintln!("NOTE: open-file limit {nofile} < {need}: reduced to {counts:?}");
    }
    let max_connections = counts.max_connections();
    let canary = Canary::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(dir.path(), &config(max_connections));
    let pid = proxy.child.id();
    let (proxy_addr, dns_addr, canary_port) = (proxy.addr, proxy.dns, canary.port());
    let (fds_at_start, rss_at_start) = usage(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async move {
        let echo = echo_upstream().await;
        // 1. The idle tunnels, 64 opening at a time.
        let opened = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        let mut openers = Vec::new();
        for _ in 0..counts.idle {
            let gate = Arc::clone(&gate);
            openers.push(tokio::spawn(async move {
                let _p = gate.acquire().await.unwrap();
                open_tunnel(proxy_addr, echo).await
            }));
        }
        let mut idle = Vec::new();
        for o in openers {
            idle.push(o.await.unwrap().unwrap_or_else(|e| panic!("idle tunnel: {e}")));
        }
        let idle_open_s = opened.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (fds_idle, rss_idle) = usage(pid);

        // 2. The hostile clients.
        let stop = Arc::new(AtomicBool::new(false));
        let (cut, refused, junk) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let mut hostile = Vec::new();
        for _ in 0..counts.slowloris {
            hostile.push(tokio::spawn(slowloris(proxy_addr, Arc::clone(&stop), Arc::clone(&cut))));
        }
        for _ in 0..counts.deny_flooders {
            let f = deny_flooder(proxy_addr, canary_port, Arc::clone(&stop), Arc::clone(&refused));
            hostile.push(tokio::spawn(f));
        }
        for n in 0..counts.dns_flooders {
            let f = dns_flooder(dns_addr, n as u8 + 2, Arc::clone(&stop), Arc::clone(&junk));
            hostile.push(tokio::spawn(f));
        }

        // 3. The good client, for the whole hostile phase; every operation
        // must succeed (each bounded in time). The proxy's usage is
        // sampled meanwhile.
        let good_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = Instant::now();
        let (mut good_ops, mut peak_fds, mut peak_rss) = (0u32, 0u64, 0u64);
        let mut dns_resends = 0u32;
        while started.elapsed() < counts.hostile_for {
            let op = good_ops;
            let tunnel = tokio::time::timeout(Duration::from_secs(10), async {
                let mut s = open_tunnel(proxy_addr, echo).await?;
                if echoes(&mut s, format!("good {op}\n").as_bytes()).await {
                    Ok(())
                } else {
                    Err("no echo of the second message".to_owned())
                }
            })
            .await;
            assert!(
                matches!(tunnel, Ok(Ok(()))),
                "good tunnel {op} failed: {tunnel:?}; proxy (fds, RSS KiB) {:?}",
                usage(pid)
            );
            let dns = good_dns(&good_socket, dns_addr, op as u16).await;
            match dns {
                Ok(sends) => dns_resends += sends - 1,
                Err(e) => panic!("good DNS query {op} failed: {e}"),
            }
            good_ops += 1;
            let (fds, rss) = usage(pid);
            peak_fds = peak_fds.max(fds);
            peak_rss = peak_rss.max(rss);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for h in hostile {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }

        // 4. Every idle tunnel is still there.
        for (i, s) in idle.iter_mut().enumerate() {
            assert!(echoes(s, b"y").await, "idle tunnel {i} is gone");
        }

        // 5. Over max_connections: fill every slot with more tunnels (they
        // stay open, unlike clients that send nothing, which the header
        // timeout cuts); the next client gets 503; once they close, the
        // proxy serves again.
        let mut fillers = Vec::new();
        let mut got_503 = None;
        'fill: while fillers.len() <= max_connections {
            let batch: Vec<_> = (0..64).map(|_| tokio::spawn(open_tunnel(proxy_addr, echo))).collect();
            for b in batch {
                match b.await.unwrap() {
                    Ok(s) => fillers.push(s),
                    Err(e) if e.starts_with("status 503") => got_503 = Some(e),
                    Err(e) => panic!("filler tunnel: {e}"),
                }
            }
            if got_503.is_some() {
                break 'fill;
            }
        }
        assert!(got_503.is_some(), "no 503 although every slot was taken");
        // Every slot held a tunnel (a few may still be held by hostile
        // clients closing just now).
        let open = fillers.len() + idle.len();
        assert!(
            open <= max_connections && open + 16 >= max_connections,
            "{open} tunnels open when the slots ran out (max_connections {max_connections})"
        );
        let (fds_full, rss_full) = usage(pid);
        drop(fillers);
        drop(idle);
        let recovered = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if open_tunnel(proxy_addr, echo).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            recovered.is_ok(),
            "the proxy did not serve again after the connections closed"
        );
        peak_fds = peak_fds.max(fds_full);
        peak_rss = peak_rss.max(rss_full);
        let (refused, junk) = (refused.load(Ordering::Relaxed), junk.load(Ordering::Relaxed));
        let text = format!(
            "idle tunnels {} opened in {idle_open_s:.1}s; good operations {good_ops} (DNS questions sent again: {dns_resends}); slowloris cut off {}; \
             denied CONNECTs answered {refused}; malformed DNS packets {junk}; proxy fds start {fds_at_start} / \
             with idle tunnels {fds_idle} / peak {peak_fds} / all slots taken {fds_full} (limit {}); RSS KiB start \
             {rss_at_start} / with idle tunnels {rss_idle} / peak {peak_rss} (limit {}); per idle tunnel: {:.2} fds, \
             {:.1} KiB",
            counts.idle,
            cut.load(Ordering::Relaxed),
            fd_limit(max_connections),
            rss_limit_kib(max_connections),
            (fds_idle - fds_at_start) as f64 / counts.idle.max(1) as f64,
            rss_idle.saturating_sub(rss_at_start) as f64 / counts.idle.max(1) as f64,
        );
        Report {
            text,
            peak_fds,
            peak_rss,
            refused,
            junk,
        }
    });
    eprintln!("{}", report.text);
    let Report {
        peak_fds,
        peak_rss,
        refused,
        junk,
        ..
    } = report;
    assert!(
        peak_fds <= fd_limit(max_connections),
        "proxy held {peak_fds} descriptors, over {}",
        fd_limit(max_connections)
    );
    assert!(
        peak_rss <= rss_limit_kib(max_connections),
        "proxy RSS {peak_rss} KiB, over {}",
        rss_limit_kib(max_connections)
    );
    assert!(refused > 0 && junk > 0, "the floods did not flood");
    canary.assert_untouched();
    // The proxy is still alive and stops cleanly, its log closed. (Its
    // integrity under load and crashes is `faults.rs`'s subject: `audit
    // verify` of a debug build takes minutes for this many entries.)
    let log = proxy.audit_path();
    assert!(proxy.stop().success());
    let entries = read_entries(&log);
    let last = entries.last().unwrap();
    assert_eq!(last["kind"], "stop", "{last}");
    assert_eq!(last["count"], entries.len() as u64, "{last}");
}
