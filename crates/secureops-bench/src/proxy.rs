//! The proxy under test: the real `secureops proxy` binary with a config
//! written for the upstreams of this run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::upstream::Upstreams;

/// How long `secureops proxy` may take to print its listening lines.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to drain and write its closing entry.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The `[audit]` settings of one instance.
#[derive(Debug, Clone)]
pub struct AuditSpec {
    /// Folder of the log and its key.
    pub dir: PathBuf,
    /// `batch` or `always`.
    pub fsync: &'static str,
}

impl AuditSpec {
    /// The log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }
}

/// Names of the static DNS case: `s0.static.bench` ... (at most 100).
pub fn static_names(n: usize) -> Vec<String> {
    (0..n.min(100)).map(|i| format!("s{i}.static.bench")).collect()
}

/// The config of one instance: the upstreams by `[dns] hosts` names,
/// loopback listed as a private destination, the DNS sinkhole forwarding
/// `*.cached.bench` to the in-process upstream.
pub fn config(
    up: &Upstreams,
    idle_echo: Option<SocketAddr>,
    audit: &AuditSpec,
    max_connections: usize,
    static_count: usize,
) -> String {
    let mut rules = vec![
        format!("\"echo.bench:{}\"", up.echo.port()),
        format!("\"sink.bench:{}\"", up.sink.port()),
        format!("\"source.bench:{}\"", up.source.port()),
        format!("\"web.bench:{}\"", up.web.port()),
    ];
    if let Some(idle) = idle_echo {
        rules.push(format!("\"idle.bench:{}\"", idle.port()));
    }
    rules.push("\"*.static.bench\"".into());
    rules.push("\"*.cached.bench\"".into());
    let mut hosts = vec![
        r#""idle.bench" = ["127.0.0.1"]"#.to_owned(),
        r#""echo.bench" = ["127.0.0.1"]"#.to_owned(),
        r#""sink.bench" = ["127.0.0.1"]"#.to_owned(),
        r#""source.bench" = ["127.0.0.1"]"#.to_owned(),
        r#""web.bench" = ["127.0.0.1"]"#.to_owned(),
    ];
    for (i, name) in static_names(static_count).iter().enumerate() {
        hosts.push(format!(r#""{name}" = ["1.2.3.{}"]"#, i + 1));
    }
    // TOML basic strings: backslash and quote escaped.
    let quote = |p: &Path| p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let (dir, log) = (quote(&audit.dir), quote(&audit.log()));
    format!(
        r#"# Written by secureops-bench for one run.
[proxy]
listen = "127.0.0.1:0"
max_connections = {max_connections}

[network]
egress_allowlist = [{rules}]
private_destinations = ["127.0.0.0/8"]

[dns]
listen = "127.0.0.1:0"
upstream = ["{dns}"]
# One client (this benchmark) at tens of thousands of queries/s.
client_rate = 0
hosts = {{ {hosts} }}

[audit]
path = "{log}"
signing_key = "{dir}/audit.key"
fsync = "{fsync}"
"#,
        rules = rules.join(", "),
        dns = up.dns,
        hosts = hosts.join(", "),
        fsync = audit.fsync,
    )
}

/// The idle case's echo upstream: this binary again with `--serve-echo`,
/// so that the client and upstream ends of the idle tunnels are in two
/// processes (each under its own open-file limit). It exits when its
/// stdin closes, i.e. when this is dropped.
#[derive(Debug)]
pub struct EchoProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: Child,
}

impl EchoProcess {
    /// Starts it and waits for its address.
    pub async fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--serve-echo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start the idle echo process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("idle echo process: no address")??
            .unwrap_or_default();
        let addr = listening(&line, "echo=").with_context(|| format!("idle echo process said {line:?}"))?;
        Ok(Self { addr, _child: child })
    }
}

/// `--serve-echo`: serves the echo upstream until stdin closes.
pub async fn serve_echo_until_stdin_closes() -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let addr = crate::upstream::serve_echo().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening echo={addr}")?;
    out.flush()?;
    drop(out);
    tokio::task::spawn_blocking(|| {
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
    })
    .await?;
    Ok(())
}

/// A running `secureops proxy`.
#[derive(Debug)]
pub struct Secureops {
    /// Its name in the report.
    pub name: String,
    /// The explicit proxy listener.
    pub addr: SocketAddr,
    /// The DNS sinkhole.
    pub dns: SocketAddr,
    /// `/metrics`, when its config has `[metrics]`.
    pub metrics: Option<SocketAddr>,
    /// Its process.
    pub pid: u32,
    /// The audit log (`None`: the null sink of a benchmark build).
    pub audit: Option<PathBuf>,
    child: Child,
    bin: PathBuf,
    /// `XDG_STATE_HOME` of the guard (its audit anchors).
    state: PathBuf,
}

fn listening(line: &str, what: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix("listening ")?.strip_prefix(what)?.parse().ok()
}

impl Secureops {
    /// Writes `config` to `work/NAME.toml`, starts the binary and waits for
    /// both listening lines. `audit` is the log that config names; `None`
    /// starts a `bench-null-audit` build with its null sink instead.
    pub async fn start(
        bin: &Path,
        name: &str,
        work: &Path,
        config: &str,
        audit: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let path = work.join(format!("{name}.toml"));
        std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
        let stderr = std::fs::File::create(work.join(format!("{name}.stderr")))?;
        let mut command = Command::new(bin);
        if audit.is_none() {
            // A `--features bench-null-audit` build: the null sink.
            command.env("SECUREOPS_BENCH_NULL_AUDIT", "1");
        }
        // The guard's anchors go to this run's own folder, not the user's
        // state folder (`/var/lib/secureops` for root).
        let mut child = command
            .env("XDG_STATE_HOME", work.join("state"))
            .arg("proxy")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id().context("no pid")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut dns, mut metrics) = (None, None, None);
        let want_metrics = config.contains("\n[metrics]");
        let started = tokio::time::timeout(START_TIMEOUT, async {
            while addr.is_none() || dns.is_none() || (want_metrics && metrics.is_none()) {
                let Some(line) = lines.next_line().await? else {
                    bail!("exited before listening");
                };
                addr = addr.or(listening(&line, "proxy="));
                dns = dns.or(listening(&line, "dns="));
                metrics = metrics.or(listening(&line, "metrics="));
            }
            Ok(())
        })
        .await;
        let log = || std::fs::read_to_string(work.join(format!("{name}.stderr"))).unwrap_or_default();
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("{name}: {e}; stderr:\n{}", log()),
            Err(_) => bail!(
                "{name}: no listening lines within {START_TIMEOUT:?}; stderr:\n{}",
                log()
            ),
        }
        // Keep reading stdout so that a late line never meets a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name: name.to_owned(),
            addr: addr.context("no proxy address")?,
            dns: dns.context("no dns address")?,
            metrics,
            pid,
            audit,
            child,
            bin: bin.to_owned(),
            state: work.join("state"),
        })
    }

    /// The sum of every sample of `metric` in one scrape of `/metrics`
    /// (a plain HTTP/1.1 GET; the guard closes after answering).
    pub async fn scrape_sum(&self, metric: &str) -> anyhow::Result<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics.context("no [metrics] listener")?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
            .await
            .context("scrape timed out")??;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }

    /// SIGTERM, then waits for the clean exit (drain + closing entry);
    /// then, unless `verify` is `None`, checks the audit log with
    /// `secureops audit verify` for at most that long. Returns its one-line
    /// verdict.
    pub async fn stop(mut self, verify: Option<Duration>) -> anyhow::Result<String> {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let status = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("{}: still running {STOP_TIMEOUT:?} after SIGTERM", self.name);
            }
        };
        if !status.success() {
            bail!("{}: exited with {status}", self.name);
        }
        let Some(audit) = &self.audit else {
            return Ok("none (null sink)".into());
        };
        let Some(limit) = verify else {
            return Ok("not checked (--smoke)".into());
        };
        let verifying = Command::new(&self.bin)
            .env("XDG_STATE_HOME", self.state.clone())
            .args(["audit", "verify"])
            .arg(audit)
            .kill_on_drop(true)
            .output();
        let Ok(out) = tokio::time::timeout(limit, verifying).await else {
            return Ok(format!("not checked: not finished within {limit:?}"));
        };
        let out = out?;
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = all
            .lines()
            .find(|l| l.starts_with("ok "))
            .or_else(|| all.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or_default()
            .to_owned();
        if !out.status.success() {
            bail!("{}: audit verify failed: {text}", self.name);
        }
        Ok(text)
    }
}
