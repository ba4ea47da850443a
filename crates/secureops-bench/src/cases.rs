//! The measurements. Each case runs against every target in turn
//! (direct, secureops, then the peers), so the figures of one case are
//! taken minutes apart at most, on the same machine state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::client::{self, Conn, Ctx, HttpClient, Target, Up};
use crate::dns;
use crate::load::{self, Run, Tally};
use crate::procstat::{Usage, Watch, rss_kb};
use crate::report::Row;

/// Knobs of one benchmark run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Length of each measurement.
    pub duration: Duration,
    /// Concurrent clients of the closed-loop cases.
    pub clients: usize,
    /// Clients flooding denied CONNECTs.
    pub flood_clients: usize,
    /// Allowed clients measured with and without the flood.
    pub flood_allowed: usize,
    /// Tunnels held open for the idle-memory case.
    pub idle_tunnels: usize,
    /// Bytes the half-close source sends per exchange.
    pub half_close_bytes: u64,
    /// Concurrent DNS clients (one query outstanding each).
    pub dns_clients: usize,
    /// Distinct names per DNS case.
    pub dns_names: usize,
    /// Longest wait for one operation.
    pub op_timeout: Duration,
    /// Pause between measurements (closing connections settle).
    pub settle: Duration,
}

/// Where the DNS case sends its queries for one target.
#[derive(Debug, Clone)]
pub struct DnsTarget {
    /// The target (for names, PID and strictness).
    pub target: Arc<Target>,
    /// Its DNS server.
    pub addr: SocketAddr,
}

fn progress(case: &str, target: &str) {
    eprintln!("  {case:<20} {target}");
}

async fn settle(s: &Settings) {
    tokio::time::sleep(s.settle).await;
}

/// Runs `f` while watching `target`'s process.
async fn watched<F: Future<Output = Run>>(target: &Target, f: F) -> (Run, Usage) {
    let w = Watch::start(target.pid);
    let run = f.await;
    (run, w.finish().await)
}

fn echo_loop(ctx: &Arc<Ctx>, t: &Arc<Target>, clients: usize, s: &Settings) -> impl Future<Output = Run> + use<> {
    let (ctx, t) = (Arc::clone(ctx), Arc::clone(t));
    load::closed_loop(clients, s.duration, s.op_timeout, move |_| {
        client::echo_once(Arc::clone(&ctx), Arc::clone(&t))
    })
}

fn refusal_loop(ctx: &Arc<Ctx>, t: &Arc<Target>, clients: usize, s: &Settings) -> impl Future<Output = Run> + use<> {
    let (ctx, t) = (Arc::clone(ctx), Arc::clone(t));
    load::closed_loop(clients, s.duration, s.op_timeout, move |_| {
        client::refused_once(Arc::clone(&ctx), Arc::clone(&t))
    })
}

/// A short unrecorded echo load on every target first: the first measured
/// figures must not include connection pools, page faults and caches
/// warming up.
pub async fn warm_up(ctx: &Arc<Ctx>, targets: &[Arc<Target>], s: &Settings) {
    let short = Settings {
        duration: s.duration.min(Duration::from_millis(300)),
        ..s.clone()
    };
    for t in targets {
        let run = echo_loop(ctx, t, 4, &short).await;
        if run.tally.errors > 0 {
            eprintln!(
                "  warm-up of {}: {} errors ({})",
                t.name,
                run.tally.errors,
                run.tally.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    settle(s).await;
}

/// CONNECT → 200 → 64-byte echo → close, `clients` at once.
pub async fn tunnel_setup(case: &'static str, ctx: &Arc<Ctx>, targets: &[Arc<Target>], s: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in targets {
        progress(case, &t.name);
        let (run, usage) = watched(t, echo_loop(ctx, t, s.clients, s)).await;
        rows.push(Row::from_run(case, t, s.clients, run, usage, "conns_per_s"));
        settle(s).await;
    }
    rows
}

/// CONNECT to `denied.bench` → 403 → close.
pub async fn denied(ctx: &Arc<Ctx>, targets: &[Arc<Target>], s: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in targets {
        progress("denied_connect", &t.name);
        let (run, usage) = watched(t, refusal_loop(ctx, t, s.clients, s)).await;
        rows.push(Row::from_run(
            "denied_connect",
            t,
            s.clients,
            run,
            usage,
            "refusals_per_s",
        ));
        settle(s).await;
    }
    rows
}

/// Keep-alive GETs (absolute-form through a proxy).
pub async fn http_get(ctx: &Arc<Ctx>, targets: &[Arc<Target>], s: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in targets {
        progress("http_get", &t.name);
        let deadline = Instant::now() + s.duration;
        let (ctx2, t2, timeout) = (Arc::clone(ctx), Arc::clone(t), s.op_timeout);
        let (run, usage) = watched(
            t,
            load::clients(s.clients, move |_| {
                let (ctx, t) = (Arc::clone(&ctx2), Arc::clone(&t2));
                async move {
                    let mut tally = Tally::default();
                    let mut http = HttpClient::default();
                    let mut first = true;
                    while Instant::now() < deadline {
                        if !first && http.needs_connect() {
                            tally.reconnects += 1;
                        }
                        first = false;
                        let started = Instant::now();
                        let mut again = 0;
                        let result = match tokio::time::timeout(timeout, http.get(&ctx, &t, &mut again)).await {
                            Ok(r) => r,
                            Err(_) => Err(anyhow::anyhow!("no answer within {timeout:?}")),
                        };
                        tally.reconnects += again;
                        if result.is_err() {
                            http = HttpClient::default();
                        }
                        tally.record(started, result);
                    }
                    tally
                }
            }),
        )
        .await;
        rows.push(Row::from_run("http_get", t, s.clients, run, usage, "requests_per_s"));
        settle(s).await;
    }
    rows
}

/// Which way the bytes of a bulk case go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream (the sink).
    Up,
    /// Upstream (the streaming source) to client.
    Down,
}

/// Bulk transfer through `streams` tunnels at once, byte counts checked.
pub async fn bulk(
    ctx: &Arc<Ctx>,
    targets: &[Arc<Target>],
    s: &Settings,
    streams: usize,
    direction: Direction,
) -> Vec<Row> {
    let case = match (direction, streams) {
        (Direction::Up, 1) => "bulk_1",
        (Direction::Up, _) => "bulk_8",
        (Direction::Down, 1) => "bulk_down_1",
        (Direction::Down, _) => "bulk_down_8",
    };
    let mut rows = Vec::new();
    for t in targets {
        progress(case, &t.name);
        let until = Instant::now() + s.duration;
        let limit = s.duration + s.op_timeout;
        let (ctx2, t2) = (Arc::clone(ctx), Arc::clone(t));
        let (run, usage) = watched(
            t,
            load::clients(streams, move |_| {
                let (ctx, t) = (Arc::clone(&ctx2), Arc::clone(&t2));
                async move {
                    let mut tally = Tally::default();
                    let mut lost = 0;
                    let started = Instant::now();
                    let once = async {
                        match direction {
                            Direction::Up => client::bulk_once(ctx, t, until, &mut lost).await,
                            Direction::Down => client::download_once(ctx, t, until, &mut lost).await,
                        }
                    };
                    let result = match tokio::time::timeout(limit, once).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!("stream not done within {limit:?}")),
                    };
                    tally.record(started, result);
                    tally.lost = lost;
                    tally
                }
            }),
        )
        .await;
        let (bytes, lost, secs) = (run.tally.bytes, run.tally.lost, run.elapsed.as_secs_f64());
        let mut row = Row::from_run(case, t, streams, run, usage, "mb_per_s");
        row.rate = Some(("mb_per_s", if secs > 0.0 { bytes as f64 / secs / 1e6 } else { 0.0 }));
        row.lat = None;
        row.lost_bytes = Some(lost);
        if lost > 0 {
            row.check.push(format!("{lost} bytes lost"));
        }
        rows.push(row);
        settle(s).await;
    }
    rows
}

/// The client shuts down its sending side first; every byte the upstream
/// sends afterwards must still arrive.
pub async fn half_close(ctx: &Arc<Ctx>, targets: &[Arc<Target>], s: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in targets {
        progress("half_close", &t.name);
        let lost = Arc::new(AtomicU64::new(0));
        let (ctx2, t2, lost2, n) = (Arc::clone(ctx), Arc::clone(t), Arc::clone(&lost), s.half_close_bytes);
        let (run, usage) = watched(
            t,
            load::closed_loop(s.clients, s.duration, s.op_timeout, move |_| {
                let (ctx, t, lost) = (Arc::clone(&ctx2), Arc::clone(&t2), Arc::clone(&lost2));
                async move {
                    let mut l = 0;
                    let r = client::half_close_once(ctx, t, n, &mut l).await;
                    lost.fetch_add(l, Ordering::Relaxed);
                    r
                }
            }),
        )
        .await;
        let lost = lost.load(Ordering::Relaxed);
        let mut row = Row::from_run("half_close", t, s.clients, run, usage, "exchanges_per_s");
        row.lost_bytes = Some(lost);
        row.extra.insert("bytes_per_exchange".into(), json!(n));
        if lost > 0 {
            row.check.push(format!("{lost} bytes lost"));
        }
        rows.push(row);
        settle(s).await;
    }
    rows
}

/// Allowed tunnel setup latency without, then with, `flood_clients`
/// clients flooding denied CONNECTs. Returns (without rows, with rows).
pub async fn flood(ctx: &Arc<Ctx>, targets: &[Arc<Target>], s: &Settings) -> (Vec<Row>, Vec<Row>) {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for t in targets {
        progress("flood_off", &t.name);
        let (run, usage) = watched(t, echo_loop(ctx, t, s.flood_allowed, s)).await;
        let off_row = Row::from_run("flood_off", t, s.flood_allowed, run, usage, "conns_per_s");
        settle(s).await;
        progress("flood_on", &t.name);
        let w = Watch::start(t.pid);
        let (run, flood_run) = tokio::join!(
            echo_loop(ctx, t, s.flood_allowed, s),
            refusal_loop(ctx, t, s.flood_clients, s)
        );
        let usage = w.finish().await;
        let mut row = Row::from_run("flood_on", t, s.flood_allowed, run, usage, "conns_per_s");
        row.extra.insert("flood_clients".into(), json!(s.flood_clients));
        row.extra
            .insert("flood_refusals_per_s".into(), json!(flood_run.rate().round()));
        row.extra.insert("flood_errors".into(), json!(flood_run.tally.errors));
        if let (Some(a), Some(b)) = (row.lat, off_row.lat)
            && b.p99 > 0
        {
            let r = f64::from(a.p99) / f64::from(b.p99);
            row.extra
                .insert("p99_vs_no_flood".into(), json!((r * 1000.0).round() / 1000.0));
        }
        if flood_run.tally.errors > 0 {
            row.check.push(format!(
                "flood: {} of {} denied attempts not refused: {}",
                flood_run.tally.errors,
                flood_run.tally.ok + flood_run.tally.errors,
                flood_run.tally.first_error.as_deref().unwrap_or("?")
            ));
        }
        off.push(off_row);
        on.push(row);
        settle(s).await;
    }
    (off, on)
}

/// The DNS cases' names: (case, names, expect NXDOMAIN).
pub fn dns_name_sets(s: &Settings) -> Vec<(&'static str, Arc<Vec<String>>, bool)> {
    let n = s.dns_names.max(1);
    let denied = (0..n)
        .map(|i| format!("c2VjcmV0LXRva2VuLSVk{i:06}qujdrevgr0hjsktmtu5pufftu1rvvlzxwfo.exfil.denied.bench"))
        .collect();
    let statics = crate::proxy::static_names(n);
    let cached = (0..n).map(|i| format!("c{i}.cached.bench")).collect();
    vec![
        ("dns_denied", Arc::new(denied), true),
        ("dns_static", Arc::new(statics), false),
        ("dns_cached", Arc::new(cached), false),
    ]
}

/// One UDP query and its checked answer.
async fn dns_query(sock: &UdpSocket, id: u16, name: &str, nxdomain: bool, q: &mut Vec<u8>) -> anyhow::Result<u64> {
    dns::query(id, name, q);
    sock.send(q).await?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf).await?;
        let Some(reply) = dns::reply(&buf[..n]) else {
            continue;
        };
        if reply.id != id {
            // A late answer to an earlier query that timed out.
            continue;
        }
        return match (nxdomain, reply.rcode, reply.answers) {
            (true, dns::NXDOMAIN, 0) | (false, 0, 1..) => Ok(0),
            _ => bail!("{name}: rcode {} with {} answers", reply.rcode, reply.answers),
        };
    }
}

/// `clients` UDP clients, one query outstanding each, until `deadline`
/// or (when `None`) one pass over the names.
async fn dns_load(
    addr: SocketAddr,
    names: Arc<Vec<String>>,
    nxdomain: bool,
    clients: usize,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Run {
    load::clients(clients, move |i| {
        let names = Arc::clone(&names);
        async move {
            let mut tally = Tally::default();
            let sock = match UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await {
                Ok(s) => s,
                Err(e) => {
                    tally.fail(format!("bind: {e}"));
                    return tally;
                }
            };
            if let Err(e) = sock.connect(addr).await {
                tally.fail(format!("connect: {e}"));
                return tally;
            }
            let mut q = Vec::with_capacity(512);
            let mut k = i;
            let mut id = (i as u16).wrapping_mul(7919);
            loop {
                match deadline {
                    Some(d) if Instant::now() >= d => break,
                    None if k >= names.len() => break,
                    _ => {}
                }
                let name = &names[k % names.len()];
                k += clients;
                id = id.wrapping_add(1);
                let started = Instant::now();
                let r = match tokio::time::timeout(timeout, dns_query(&sock, id, name, nxdomain, &mut q)).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("{name}: no answer within {timeout:?} (lost)")),
                };
                tally.record(started, r);
            }
            tally
        }
    })
    .await
}

/// DNS queries/s and latency: denied, static (`[dns] hosts`) and cached
/// names, against the in-process authoritative server (direct) and the
/// secureops sinkhole.
pub async fn dns_cases(targets: &[DnsTarget], s: &Settings) -> Vec<Vec<Row>> {
    let mut cases = Vec::new();
    let timeout = Duration::from_secs(1).min(s.op_timeout);
    for (case, names, nxdomain) in dns_name_sets(s) {
        let mut rows = Vec::new();
        for d in targets {
            if case == "dns_cached" {
                // One pass first: the upstream's answers land in the cache.
                let warm = dns_load(d.addr, Arc::clone(&names), false, s.dns_clients, None, timeout).await;
                if warm.tally.errors > 0 {
                    eprintln!(
                        "  warm-up of {}: {} errors ({})",
                        d.target.name,
                        warm.tally.errors,
                        warm.tally.first_error.as_deref().unwrap_or("?")
                    );
                }
            }
            progress(case, &d.target.name);
            let deadline = Some(Instant::now() + s.duration);
            let (run, usage) = watched(
                &d.target,
                dns_load(d.addr, Arc::clone(&names), nxdomain, s.dns_clients, deadline, timeout),
            )
            .await;
            let mut row = Row::from_run(case, &d.target, s.dns_clients, run, usage, "queries_per_s");
            row.bytes = None;
            row.extra.insert("names".into(), json!(names.len()));
            rows.push(row);
            settle(s).await;
        }
        cases.push(rows);
    }
    cases
}

/// Opens one tunnel to the echo upstream and makes sure it relays.
async fn open_idle(ctx: &Ctx, t: &Target) -> anyhow::Result<Conn> {
    let mut c = client::open(ctx, t, Up::IdleEcho).await?;
    c.stream.write_all(b"i").await?;
    let b = c.read_n(1).await?;
    if b != b"i" {
        bail!("idle tunnel: echo differs");
    }
    Ok(c)
}

/// `idle_tunnels` tunnels opened (64 at a time) and held; the proxy's
/// resident memory with all of them open; then each must still echo.
pub async fn idle(ctx: &Arc<Ctx>, targets: &[Arc<Target>], s: &Settings) -> Vec<Row> {
    const AT_ONCE: usize = 64;
    let open_limit = Duration::from_secs(60);
    let mut rows = Vec::new();
    for t in targets {
        progress("idle_tunnels", &t.name);
        let w = Watch::start(t.pid);
        let baseline = t.pid.and_then(rss_kb);
        let n = s.idle_tunnels;
        let started = Instant::now();
        let deadline = started + open_limit;
        let mut set = tokio::task::JoinSet::new();
        for first in 0..AT_ONCE.min(n) {
            let (ctx, t, timeout) = (Arc::clone(ctx), Arc::clone(t), s.op_timeout);
            set.spawn(async move {
                let mut tally = Tally::default();
                let mut conns = Vec::new();
                let mut k = first;
                while k < n && Instant::now() < deadline {
                    let at = Instant::now();
                    match tokio::time::timeout(timeout, open_idle(&ctx, &t)).await {
                        Ok(Ok(c)) => {
                            conns.push(c);
                            tally.record(at, Ok(0));
                        }
                        Ok(Err(e)) => tally.fail(format!("open: {e:#}")),
                        Err(_) => tally.fail(format!("open: no answer within {timeout:?}")),
                    }
                    k += AT_ONCE;
                }
                (tally, conns)
            });
        }
        let mut tally = Tally::default();
        let mut conns = Vec::with_capacity(n);
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((t, c)) => {
                    tally.merge(t);
                    conns.extend(c);
                }
                Err(e) => tally.fail(format!("task: {e}")),
            }
        }
        let open_s = started.elapsed().as_secs_f64();
        let opened = conns.len();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = t.pid.and_then(rss_kb);
        // Every tunnel must still relay.
        let mut alive = 0usize;
        let mut dead = Vec::new();
        let mut chunks: Vec<Vec<Conn>> = (0..AT_ONCE).map(|_| Vec::new()).collect();
        for (i, c) in conns.into_iter().enumerate() {
            chunks[i % AT_ONCE].push(c);
        }
        let mut set = tokio::task::JoinSet::new();
        for chunk in chunks {
            let timeout = s.op_timeout;
            set.spawn(async move {
                let mut ok = 0usize;
                let mut bad = Vec::new();
                let mut keep = Vec::new();
                for mut c in chunk {
                    let r = tokio::time::timeout(timeout, async {
                        c.stream.write_all(b"k").await?;
                        c.read_n(1).await
                    })
                    .await;
                    match r {
                        Ok(Ok(b)) if b == b"k" => ok += 1,
                        Ok(Ok(_)) => bad.push("echo differs".to_owned()),
                        Ok(Err(e)) => bad.push(format!("{e:#}")),
                        Err(_) => bad.push("no echo".to_owned()),
                    }
                    keep.push(c);
                }
                (ok, bad, keep)
            });
        }
        let mut held = Vec::new();
        while let Some(joined) = set.join_next().await {
            if let Ok((ok, bad, keep)) = joined {
                alive += ok;
                dead.extend(bad);
                held.push(keep);
            }
        }
        drop(held);
        // Let the proxy see every close before the next target.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let usage = w.finish().await;
        let run = Run {
            tally,
            elapsed: Duration::from_secs_f64(open_s),
        };
        let mut row = Row::from_run("idle_tunnels", t, AT_ONCE, run, usage, "tunnels_per_s");
        row.ok = alive as u64;
        row.bytes = None;
        row.rss_kb = rss;
        row.extra.insert("tunnels_requested".into(), json!(n));
        row.extra.insert("tunnels_opened".into(), json!(opened));
        row.extra.insert("tunnels_alive".into(), json!(alive));
        row.extra
            .insert("open_s".into(), json!((open_s * 100.0).round() / 100.0));
        if let (Some(r), Some(b)) = (rss, baseline) {
            row.extra.insert("rss_baseline_kb".into(), json!(b));
            if opened > 0 {
                let per = (r.saturating_sub(b)) as f64 / opened as f64;
                row.extra
                    .insert("rss_per_tunnel_kb".into(), json!((per * 100.0).round() / 100.0));
            }
        }
        if opened < n {
            row.check.push(format!("{opened} of {n} tunnels opened"));
        }
        if !dead.is_empty() {
            row.errors += dead.len() as u64;
            row.check
                .push(format!("{} open tunnels stopped relaying: {}", dead.len(), dead[0]));
        }
        rows.push(row);
        settle(s).await;
    }
    rows
}
