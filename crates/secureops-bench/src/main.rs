//! `secureops-bench`: the load benchmark of the SecureOps egress proxy.
//!
//! Starts loopback upstreams in this process (TCP echo, byte sink,
//! half-close source, HTTP/1.1, authoritative DNS), starts the real
//! `secureops proxy` with a config generated for them, and runs every case
//! against the direct path (client straight to the upstream), secureops
//! and each `--peer` proxy (tinyproxy, squid), target after target within
//! each case. Prints one JSON line per measurement and a table with
//! ratios to the direct path. `bench/load/run.sh` installs and starts the
//! peers and runs this end to end; `bench/load/README.md` explains how to
//! read the output.

mod cases;
mod client;
mod dns;
mod load;
mod procstat;
mod proxy;
mod report;
mod upstream;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use crate::cases::{Direction, DnsTarget, Settings};
use crate::client::{Ctx, Naming, Target};
use crate::proxy::{AuditSpec, Secureops};
use crate::report::Row;
use crate::upstream::Upstreams;

/// The cases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Case {
    /// CONNECT → 200 → 64-byte echo → close: connections/s and latency.
    Tunnel,
    /// CONNECT to a denied name → 403: refusals/s and latency.
    Denied,
    /// Keep-alive absolute-form GETs: requests/s and latency.
    Http,
    /// Upload, then download, through 1 and 8 tunnels: MB/s, byte counts checked.
    Bulk,
    /// Half-closed clients still receive every byte.
    HalfClose,
    /// Allowed tunnel latency without and with a flood of denied CONNECTs.
    Flood,
    /// Tunnel setup rate with the audit log fsync=batch, fsync=always, tmpfs.
    Audit,
    /// DNS sinkhole: denied, static and cached names.
    Dns,
    /// Tunnel setup and DNS rates with `[metrics]` off and on, same run.
    Metrics,
    /// Proxy memory with many idle tunnels open.
    Idle,
}

const ALL_CASES: [Case; 10] = [
    Case::Tunnel,
    Case::Denied,
    Case::Http,
    Case::Bulk,
    Case::HalfClose,
    Case::Flood,
    Case::Audit,
    Case::Dns,
    Case::Metrics,
    Case::Idle,
];

/// Load benchmark of the secureops egress proxy against the direct path,
/// tinyproxy and squid. See bench/load/README.md.
#[derive(Debug, Parser)]
#[command(name = "secureops-bench", version)]
struct Args {
    /// The `secureops` binary under test [default: `secureops` next to
    /// this binary].
    #[arg(long, value_name = "PATH")]
    secureops: Option<PathBuf>,
    /// Another proxy to compare, already running with the allowlist of
    /// bench/load/README.md: NAME=HOST:PORT, optionally ,pid=PID for its
    /// memory and CPU figures. Repeatable.
    #[arg(long = "peer", value_name = "NAME=ADDR[,pid=PID]", value_parser = parse_peer)]
    peers: Vec<Peer>,
    /// Cases to run, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    cases: Vec<Case>,
    /// Seconds per measurement [default: 3; --smoke: 0.5].
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent clients of the tunnel, denied, http and half-close cases
    /// [default: 32; --smoke: 4].
    #[arg(long)]
    clients: Option<usize>,
    /// Clients flooding denied CONNECTs [default: 64; --smoke: 8].
    #[arg(long)]
    flood_clients: Option<usize>,
    /// Allowed clients measured under the flood [default: 4; --smoke: 2].
    #[arg(long)]
    flood_allowed: Option<usize>,
    /// Tunnels held open in the idle case [default: 10000; --smoke: 100].
    #[arg(long)]
    idle_tunnels: Option<usize>,
    /// Bytes sent to each half-closed client [default: 262144; --smoke: 65536].
    #[arg(long)]
    half_close_bytes: Option<u64>,
    /// Concurrent DNS clients [default: 32; --smoke: 4].
    #[arg(long)]
    dns_clients: Option<usize>,
    /// Distinct names per DNS case [default: 1000; --smoke: 50].
    #[arg(long)]
    dns_names: Option<usize>,
    /// Write the JSON lines to this file (the table then goes to stdout);
    /// without it, JSON lines go to stdout and the table to stderr.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Folder for configs and audit logs [default: the system temp folder;
    /// its file system is the "disk" of the audit case].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the work folder (configs, audit logs, proxy stderr).
    #[arg(long)]
    keep: bool,
    /// A `secureops` built with `--features bench-null-audit`: the audit
    /// case then also runs it with its null sink (nothing recorded), the
    /// baseline of `rate_vs_null_audit`.
    #[arg(long, value_name = "PATH")]
    secureops_null_audit: Option<PathBuf>,
    /// CI smoke run: short and small, correctness only.
    #[arg(long)]
    smoke: bool,
    /// Internal: serve the idle case's echo upstream until stdin closes.
    #[arg(long, hide = true)]
    serve_echo: bool,
}

/// A `--peer`.
#[derive(Debug, Clone)]
struct Peer {
    name: String,
    addr: SocketAddr,
    pid: Option<u32>,
}

fn parse_peer(s: &str) -> Result<Peer, String> {
    let (name, rest) = s.split_once('=').ok_or("want NAME=HOST:PORT[,pid=PID]")?;
    let (addr, pid) = match rest.split_once(',') {
        Some((a, p)) => {
            let p = p.strip_prefix("pid=").ok_or("want ,pid=PID")?;
            (a, Some(p.parse::<u32>().map_err(|e| format!("pid: {e}"))?))
        }
        None => (rest, None),
    };
    let addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    if name.is_empty() || name == "direct" || name.starts_with("secureops") {
        return Err(format!("peer name {name:?} is taken"));
    }
    Ok(Peer {
        name: name.to_owned(),
        addr,
        pid,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("secureops-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn settings(a: &Args) -> anyhow::Result<Settings> {
    let pick = |v: Option<usize>, full: usize, smoke: usize| v.unwrap_or(if a.smoke { smoke } else { full });
    let duration = a.duration.unwrap_or(if a.smoke { 0.5 } else { 3.0 });
    if !(0.05..=600.0).contains(&duration) {
        bail!("--duration must be between 0.05 and 600 seconds");
    }
    let s = Settings {
        duration: Duration::from_secs_f64(duration),
        clients: pick(a.clients, 32, 4).max(1),
        flood_clients: pick(a.flood_clients, 64, 8).max(1),
        flood_allowed: pick(a.flood_allowed, 4, 2).max(1),
        idle_tunnels: pick(a.idle_tunnels, 10_000, 100),
        half_close_bytes: a.half_close_bytes.unwrap_or(if a.smoke { 65_536 } else { 262_144 }),
        dns_clients: pick(a.dns_clients, 32, 4).max(1),
        dns_names: pick(a.dns_names, 1000, 50).max(1),
        op_timeout: Duration::from_secs(10),
        settle: Duration::from_millis(if a.smoke { 50 } else { 250 }),
    };
    Ok(s)
}

/// Descriptors a proxy needs besides two per tunnel (listeners, audit
/// log, DNS sockets, runtime).
const FD_SLACK: u64 = 256;

fn run(args: Args) -> anyhow::Result<bool> {
    if args.serve_echo {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        rt.block_on(proxy::serve_echo_until_stdin_closes())?;
        return Ok(true);
    }
    let mut s = settings(&args)?;
    // A proxy holds both ends of every idle tunnel; the benchmark holds the
    // client ends, its echo process the upstream ends. Child processes
    // inherit the limit raised here.
    let want = 2 * s.idle_tunnels as u64 + FD_SLACK;
    let have = procstat::raise_nofile(want);
    if have < want {
        let fit = (have.saturating_sub(FD_SLACK) / 2) as usize;
        eprintln!("note: open-file limit {have} (cannot be raised here) < {want}: idle case reduced to {fit} tunnels");
        s.idle_tunnels = fit;
    }
    let bin = match &args.secureops {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder of this binary")?
            .join("secureops"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it (`cargo build --release -p secureops`) or pass --secureops PATH",
            bin.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(args, s, bin))
}

/// Where the JSON lines go.
enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    fn line(&mut self, row: &Row) -> anyhow::Result<()> {
        let text = row.json_line();
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}")?;
                out.flush()?;
            }
            Sink::File(f) => writeln!(f, "{text}")?,
        }
        Ok(())
    }
}

/// The file system type holding `path` (longest matching mount point).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point).then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, k)| k)
}

/// A tmpfs folder for the tmpfs audit variant, when there is one.
fn tmpfs_dir() -> Option<PathBuf> {
    ["/dev/shm", "/run"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir() && fs_type(p) == "tmpfs")
}

async fn bench(args: Args, s: Settings, bin: PathBuf) -> anyhow::Result<bool> {
    let cases: Vec<Case> = if args.cases.is_empty() {
        ALL_CASES.to_vec()
    } else {
        ALL_CASES.iter().copied().filter(|c| args.cases.contains(c)).collect()
    };
    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let work = tempfile::Builder::new().prefix("secureops-bench.").tempdir_in(&base)?;
    let up = Upstreams::start().await.context("start upstreams")?;
    let idle_echo = match cases.contains(&Case::Idle) {
        true => Some(proxy::EchoProcess::start().await?),
        false => None,
    };
    let ctx = Arc::new(Ctx {
        up,
        idle_echo: idle_echo.as_ref().map(|e| e.addr),
    });
    let max_connections = (s.idle_tunnels + 1024).max(10_000);

    // The proxies under test.
    let mut proxies: Vec<Secureops> = Vec::new();
    let mut tmp_keep = None;
    let mut variants = vec![("secureops", work.path().join("audit-disk"), "batch")];
    if cases.contains(&Case::Audit) {
        variants.push(("secureops-fsync-always", work.path().join("audit-always"), "always"));
        match tmpfs_dir() {
            Some(dir) => {
                let t = tempfile::Builder::new().prefix("secureops-bench.").tempdir_in(dir)?;
                variants.push(("secureops-tmpfs", t.path().to_path_buf(), "batch"));
                tmp_keep = Some(t);
            }
            None => eprintln!("note: no tmpfs found (/dev/shm, /run): no tmpfs audit variant"),
        }
    }
    let mut audit_fs = Vec::new();
    for (name, dir, fsync) in &variants {
        std::fs::create_dir_all(dir)?;
        audit_fs.push((name.to_string(), fs_type(dir)));
        let spec = AuditSpec {
            dir: dir.clone(),
            fsync,
        };
        let config = proxy::config(&up, ctx.idle_echo, &spec, max_connections, s.dns_names);
        proxies.push(Secureops::start(&bin, name, work.path(), &config, Some(spec.log())).await?);
    }
    if let Some(null_bin) = args
        .secureops_null_audit
        .as_ref()
        .filter(|_| cases.contains(&Case::Audit))
    {
        let spec = AuditSpec {
            dir: work.path().join("audit-null"),
            fsync: "batch",
        };
        let config = proxy::config(&up, ctx.idle_echo, &spec, max_connections, s.dns_names);
        proxies.push(Secureops::start(null_bin, "secureops-null-audit", work.path(), &config, None).await?);
    }
    // The same guard with `[metrics]` on, for the metrics case.
    let metrics_proxy = match cases.contains(&Case::Metrics) {
        true => {
            let spec = AuditSpec {
                dir: work.path().join("audit-metrics"),
                fsync: "batch",
            };
            std::fs::create_dir_all(&spec.dir)?;
            let mut config = proxy::config(&up, ctx.idle_echo, &spec, max_connections, s.dns_names);
            config.push_str("\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
            Some(Secureops::start(&bin, "secureops-metrics", work.path(), &config, Some(spec.log())).await?)
        }
        false => None,
    };
    let direct = Arc::new(Target {
        name: "direct".into(),
        proxy: None,
        pid: None,
        naming: Naming::Ip,
        strict: true,
    });
    let so_target = |p: &Secureops| {
        Arc::new(Target {
            name: p.name.clone(),
            proxy: Some(p.addr),
            pid: Some(p.pid),
            naming: Naming::Names,
            strict: true,
        })
    };
    let mut targets = vec![Arc::clone(&direct), so_target(&proxies[0])];
    for peer in &args.peers {
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(peer.addr))
            .await
            .map_err(|_| anyhow::anyhow!("peer {} at {}: connect timed out", peer.name, peer.addr))?
            .with_context(|| format!("peer {} at {}", peer.name, peer.addr))?;
        targets.push(Arc::new(Target {
            name: peer.name.clone(),
            proxy: Some(peer.addr),
            pid: peer.pid,
            naming: Naming::Ip,
            strict: false,
        }));
    }
    let mut audit_targets = vec![Arc::clone(&direct)];
    audit_targets.extend(proxies.iter().map(so_target));
    let dns_targets = vec![
        DnsTarget {
            target: Arc::clone(&direct),
            addr: up.dns,
        },
        DnsTarget {
            target: so_target(&proxies[0]),
            addr: proxies[0].dns,
        },
    ];

    eprintln!(
        "secureops-bench: {} s per measurement, {} clients; targets: {}; work folder {}",
        s.duration.as_secs_f64(),
        s.clients,
        targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
        work.path().display()
    );
    let mut sink = match &args.json {
        Some(p) => Sink::File(std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?),
        None => Sink::Stdout,
    };
    let mut all: Vec<Row> = Vec::new();
    let mut emit = |mut rows: Vec<Row>, base: &str, sink: &mut Sink| -> anyhow::Result<()> {
        report::ratios(&mut rows, base);
        for r in &rows {
            sink.line(r)?;
        }
        all.extend(rows);
        Ok(())
    };
    let started = std::time::Instant::now();
    let mut everyone = targets.clone();
    everyone.extend(audit_targets.iter().skip(2).cloned());
    everyone.extend(metrics_proxy.iter().map(so_target));
    cases::warm_up(&ctx, &everyone, &s).await;
    for case in cases {
        match case {
            Case::Tunnel => emit(
                cases::tunnel_setup("tunnel_setup", &ctx, &targets, &s).await,
                "direct",
                &mut sink,
            )?,
            Case::Denied => emit(cases::denied(&ctx, &targets, &s).await, "direct", &mut sink)?,
            Case::Http => emit(cases::http_get(&ctx, &targets, &s).await, "direct", &mut sink)?,
            Case::Bulk => {
                for direction in [Direction::Up, Direction::Down] {
                    for streams in [1, 8] {
                        emit(
                            cases::bulk(&ctx, &targets, &s, streams, direction).await,
                            "direct",
                            &mut sink,
                        )?;
                    }
                }
            }
            Case::HalfClose => emit(cases::half_close(&ctx, &targets, &s).await, "direct", &mut sink)?,
            Case::Flood => {
                let (off, on) = cases::flood(&ctx, &targets, &s).await;
                emit(off, "direct", &mut sink)?;
                emit(on, "direct", &mut sink)?;
            }
            Case::Audit => {
                let mut rows = cases::tunnel_setup("audit_tunnel_setup", &ctx, &audit_targets, &s).await;
                let batch = rows.iter().find(|r| r.target == "secureops").and_then(|r| r.rate);
                let null = rows
                    .iter()
                    .find(|r| r.target == "secureops-null-audit")
                    .and_then(|r| r.rate);
                for r in &mut rows {
                    if let Some((_, fs)) = audit_fs.iter().find(|(n, _)| *n == r.target) {
                        r.extra.insert("audit_fs".into(), serde_json::json!(fs));
                        let fsync = if r.target.ends_with("always") {
                            "always"
                        } else {
                            "batch"
                        };
                        r.extra.insert("audit_fsync".into(), serde_json::json!(fsync));
                    }
                    if let (Some((_, b)), Some((_, x))) = (batch, r.rate)
                        && r.target.starts_with("secureops")
                        && b > 0.0
                    {
                        let ratio = (x / b * 1000.0).round() / 1000.0;
                        r.extra.insert("rate_vs_fsync_batch".into(), serde_json::json!(ratio));
                    }
                    if let (Some((_, n)), Some((_, x))) = (null, r.rate)
                        && r.target.starts_with("secureops")
                        && n > 0.0
                    {
                        let ratio = (x / n * 1000.0).round() / 1000.0;
                        r.extra.insert("rate_vs_null_audit".into(), serde_json::json!(ratio));
                    }
                }
                emit(rows, "direct", &mut sink)?;
            }
            Case::Dns => {
                for rows in cases::dns_cases(&dns_targets, &s).await {
                    emit(rows, "direct", &mut sink)?;
                }
            }
            Case::Metrics => {
                if let Some(on) = &metrics_proxy {
                    let off = DnsTarget {
                        target: so_target(&proxies[0]),
                        addr: proxies[0].dns,
                    };
                    let on_dns = DnsTarget {
                        target: so_target(on),
                        addr: on.dns,
                    };
                    for rows in metrics_case(&ctx, &s, on, off, on_dns).await {
                        emit(rows, "secureops", &mut sink)?;
                    }
                }
            }
            Case::Idle => emit(cases::idle(&ctx, &targets, &s).await, "secureops", &mut sink)?,
        }
    }
    let elapsed = started.elapsed();

    // Stop the proxies: clean exit, then a verified audit log.
    let mut stop_failures = Vec::new();
    let mut verdicts = Vec::new();
    for p in proxies.into_iter().chain(metrics_proxy) {
        let name = p.name.clone();
        let verify = (!args.smoke).then_some(Duration::from_secs(120));
        match p.stop(verify).await {
            Ok(v) => verdicts.push(format!("{name}: audit verify: {v}")),
            Err(e) => stop_failures.push(format!("{e:#}")),
        }
    }
    drop(tmp_keep);
    drop(idle_echo);
    if args.keep {
        let kept = work.keep();
        eprintln!("work folder kept: {}", kept.display());
    }

    let strict_failures: Vec<&Row> = all.iter().filter(|r| r.strict && !r.check.is_empty()).collect();
    let peer_failures = all.iter().filter(|r| !r.strict && !r.check.is_empty()).count();
    let mut text = String::new();
    text.push_str(&report::table(&all));
    text.push('\n');
    for (name, fs) in &audit_fs {
        text.push_str(&format!("- {name}: audit log on {fs}\n"));
    }
    for v in &verdicts {
        text.push_str(&format!("- {v}\n"));
    }
    text.push_str(&format!(
        "- {} measurements in {:.0} s; secureops is reached by [dns] hosts names (echo.bench ...), peers and direct by 127.0.0.1\n",
        all.len(),
        elapsed.as_secs_f64()
    ));
    if strict_failures.is_empty() && stop_failures.is_empty() {
        text.push_str("- correctness: every check passed for direct and secureops");
        if peer_failures > 0 {
            text.push_str(&format!(
                " ({peer_failures} failed checks on peer proxies, see the table)"
            ));
        }
        text.push('\n');
    } else {
        for r in &strict_failures {
            text.push_str(&format!("- FAIL {} / {}: {}\n", r.case, r.target, r.check.join("; ")));
        }
        for f in &stop_failures {
            text.push_str(&format!("- FAIL {f}\n"));
        }
    }
    match sink {
        Sink::Stdout => eprint!("\n{text}"),
        Sink::File(_) => print!("{text}"),
    }
    Ok(strict_failures.is_empty() && stop_failures.is_empty())
}

/// The metrics case: tunnel setup and the DNS cases against the guard
/// without and with `[metrics]`, twice in opposite orders (off/on, then
/// on/off) so neither always runs on a warmer machine. Every row's ratio is
/// to the metrics-off row of the same round (`rate_vs_metrics_off`). The
/// metrics guard's counters must have moved (else the case fails).
async fn metrics_case(
    ctx: &Arc<Ctx>,
    s: &Settings,
    on: &Secureops,
    off: DnsTarget,
    on_dns: DnsTarget,
) -> Vec<Vec<Row>> {
    let mut out = Vec::new();
    for round in 0..2 {
        let mut pair = vec![off.clone(), on_dns.clone()];
        if round == 1 {
            pair.reverse();
        }
        let tunnels: Vec<Arc<Target>> = pair.iter().map(|d| Arc::clone(&d.target)).collect();
        let mut groups = vec![cases::tunnel_setup("metrics_tunnel_setup", ctx, &tunnels, s).await];
        groups.extend(cases::dns_cases(&pair, s).await);
        for mut rows in groups {
            for r in &mut rows {
                r.case = match r.case {
                    "dns_denied" => "metrics_dns_denied",
                    "dns_static" => "metrics_dns_static",
                    "dns_cached" => "metrics_dns_cached",
                    other => other,
                };
                r.extra.insert("metrics".into(), serde_json::json!(r.target == on.name));
                r.extra.insert("round".into(), serde_json::json!(round + 1));
            }
            let base = rows.iter().find(|r| r.target == "secureops").and_then(|r| r.rate);
            for r in &mut rows {
                if let (Some((_, b)), Some((_, x))) = (base, r.rate)
                    && r.target == on.name
                    && b > 0.0
                {
                    let ratio = (x / b * 1000.0).round() / 1000.0;
                    r.extra.insert("rate_vs_metrics_off".into(), serde_json::json!(ratio));
                }
            }
            out.push(rows);
        }
    }
    // The guard with metrics must have counted what it served.
    let counted = (
        on.scrape_sum("secureops_decisions_total").await,
        on.scrape_sum("secureops_dns_queries_total").await,
    );
    let failure = match counted {
        (Ok(d), Ok(q)) if d > 0.0 && q > 0.0 => None,
        (Ok(d), Ok(q)) => Some(format!("metrics did not count: {d} decisions, {q} DNS queries")),
        (Err(e), _) | (_, Err(e)) => Some(format!("cannot scrape /metrics: {e:#}")),
    };
    if let Some(f) = failure
        && let Some(r) = out
            .last_mut()
            .and_then(|rows| rows.iter_mut().find(|r| r.target == on.name))
    {
        r.check.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        let p = parse_peer("squid=127.0.0.1:3128,pid=42").unwrap();
        assert_eq!((p.name.as_str(), p.addr.port(), p.pid), ("squid", 3128, Some(42)));
        let p = parse_peer("tinyproxy=127.0.0.1:8888").unwrap();
        assert_eq!(p.pid, None);
        assert!(parse_peer("direct=127.0.0.1:1").is_err());
        assert!(parse_peer("secureops=127.0.0.1:1").is_err());
        assert!(parse_peer("x=nowhere").is_err());
        assert!(parse_peer("x=127.0.0.1:1,pod=1").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
