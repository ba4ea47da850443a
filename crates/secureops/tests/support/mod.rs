//! Test harness: the real `secureops` binary on free loopback ports, real
//! upstreams (TLS origin, plain HTTP origin, byte-counting canary) and real
//! clients (`curl`, `openssl s_client`, raw sockets).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_secureops")
}

/// A 256 KiB tmpfs mounted for one test, unmounted on drop: a file system
/// the test can fill. Needs root; `None` (after saying SKIP) otherwise.
pub struct SmallFs {
    /// The mount point.
    pub path: PathBuf,
    /// Holds the mount point (and files kept beside it, e.g. a key).
    pub dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(test: &str) -> Option<SmallFs> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if !root {
            eprintln!("SKIP {test}: needs root to mount a small tmpfs");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&path)
            .status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("SKIP {test}: cannot mount tmpfs here");
            return None;
        }
        Some(SmallFs { path, dir })
    }

    /// Fills the file system (appends fail once a file's last page is
    /// full); remove the returned file to free the space.
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", filler.display()))
            .arg("bs=4k")
            .output();
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// A running `secureops proxy`, killed on drop.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    /// The DNS sinkhole (UDP and TCP).
    pub dns: SocketAddr,
    pub dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
    pub stderr: Arc<std::sync::Mutex<String>>,
    /// Stdout after the two listening lines (e.g. `listening metrics=`).
    pub stdout: Arc<std::sync::Mutex<String>>,
}

impl Proxy {
    /// Starts the proxy with `config` (a TOML body; `[proxy] listen` and
    /// `[audit]` paths are added when absent).
    pub fn start(config: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Self::start_at(dir.path(), config);
        p._owned = Some(dir);
        p
    }

    /// Starts the proxy in `dir`, which the caller keeps. `[proxy] listen`
    /// and `[dns] listen` default to free loopback ports.
    pub fn start_at(dir: &Path, config: &str) -> Proxy {
        Self::start_through(dir, config, &[])
    }

    /// Like [`Proxy::start_at`], the binary started through `wrapper`
    /// (a command and its arguments, e.g. `prlimit --nofile=256:`).
    pub fn start_through(dir: &Path, config: &str, wrapper: &[&str]) -> Proxy {
        /// `config` with `listen = "127.0.0.1:0"` in its `[dns]` table (added when
        /// it has none), so parallel tests never share the default port.
        fn with_dns_listen(config: &str) -> String {
            let lines: Vec<&str> = config.lines().collect();
            let Some(at) = lines.iter().position(|l| l.trim() == "[dns]") else {
                return format!("{config}\n[dns]\nlisten = \"127.0.0.1:0\"\n");
            };
            let section = lines[at + 1..].iter().take_while(|l| !l.trim_start().starts_with('['));
            if section.clone().any(|l| l.trim_start().starts_with("listen")) {
                return config.to_owned();
            }
            let mut out: Vec<&str> = lines[..=at].to_vec();
            out.push("listen = \"127.0.0.1:0\"");
            out.extend(&lines[at + 1..]);
            out.join("\n") + "\n"
        }

        let mut text = config.to_owned();
        if !text.contains("[proxy]") {
            text.push_str("\n[proxy]\nlisten = \"127.0.0.1:0\"\n");
        }
        text = with_dns_listen(&text);
        let path = dir.join("secureops.toml");
        std::fs::write(&path, text).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = command
            .args(["proxy", "-c"])
            .arg(&path)
            .current_dir(dir)
            .env("XDG_STATE_HOME", state_home(dir))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening proxy=")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}; stderr: {}", stderr.lock().unwrap()))
            .parse()
            .unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        let dns = line
            .trim()
            .strip_prefix("listening dns=")
            .unwrap_or_else(|| panic!("unexpected second line {line:?}; stderr: {}", stderr.lock().unwrap()))
            .parse()
            .unwrap();
        // Keep draining stdout so the proxy never blocks on a full pipe.
        let stdout = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proxy {
            child,
            addr,
            dns,
            dir: dir.to_path_buf(),
            _owned: None,
            stderr,
            stdout,
        }
    }

    /// The address of a later `listening WHAT=ADDR` line (waits for it).
    pub fn listening(&self, what: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        let prefix = format!("listening {what}=");
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned));
            if let Some(addr) = found {
                return addr.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "no `{prefix}` line");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("secureops-audit.jsonl")
    }

    /// Audit entries (parsed), excluding start/stop.
    pub fn decisions(&self) -> Vec<serde_json::Value> {
        read_entries(&self.audit_path())
            .into_iter()
            .filter(|e| e["kind"] == "egress" || e["kind"] == "dns")
            .collect()
    }

    /// Waits until the audit log holds at least `n` decisions.
    pub fn wait_decisions(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = self.decisions();
            if d.len() >= n || Instant::now() > deadline {
                return d;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "proxy did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_entries(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Counts connections and bytes that reach it; must stay at zero in every
/// refusal test. Accepts and reads on a background thread.
pub struct Canary {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
}

impl Canary {
    pub fn start() -> Canary {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (c, b) = (Arc::clone(&connections), Arc::clone(&bytes));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        b.fetch_add(n as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        Canary {
            addr,
            connections,
            bytes,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Asserts that nothing reached the canary.
    #[track_caller]
    pub fn assert_untouched(&self) {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(self.connections.load(Ordering::SeqCst), 0, "canary saw a connection");
        assert_eq!(self.bytes.load(Ordering::SeqCst), 0, "canary saw bytes");
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A plain HTTP/1.1 origin: answers every request with a body that echoes
/// the request line and the Host header it received; keep-alive.
pub struct HttpOrigin {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
}

impl HttpOrigin {
    pub fn start() -> HttpOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let r = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let r = Arc::clone(&r);
                std::thread::spawn(move || serve_http(stream, &r));
            }
        });
        HttpOrigin { addr, requests }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn serve_http(stream: TcpStream, count: &AtomicU64) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut host = String::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("host:") {
                host = h[5..].trim().to_owned();
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let text = format!(
            "line={}\nhost={host}\nbody={}\n",
            request_line.trim_end(),
            String::from_utf8_lossy(&body)
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A TLS origin for `names` (self-signed; the CA file is `ca_path`),
/// answering `hello from <name>` to any HTTP request, built on rustls.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub ca_path: PathBuf,
    pub handshakes: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl TlsOrigin {
    pub fn start(names: &[&str]) -> TlsOrigin {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, cert.cert.pem()).unwrap();
        let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicU64::new(0));
        let hs = Arc::clone(&handshakes);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let hs = Arc::clone(&hs);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    hs.fetch_add(1, Ordering::SeqCst);
                    let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                    let mut buf = vec![0u8; 8192];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = format!("hello from {sni}\n");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsOrigin {
            addr,
            ca_path,
            handshakes,
            _dir: dir,
            _rt: rt,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Runs `curl` with `args` through the proxy (`-x`), all proxy variables
/// cleared; returns (HTTP status, body).
pub fn curl(proxy: &Proxy, args: &[&str]) -> (u16, String) {
    curl_status(&curl_raw(proxy, args))
}

pub fn curl_raw(proxy: &Proxy, args: &[&str]) -> Output {
    curl_command(&proxy.url(), args).output().unwrap()
}

/// `curl -x PROXY_URL ARGS…` with every proxy variable cleared and the
/// status appended to stdout (see [`curl_status`]).
pub fn curl_command<S: AsRef<std::ffi::OsStr>>(proxy_url: &str, args: &[S]) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "20",
        "-x",
        proxy_url,
        "-w",
        "\nSTATUS=%{http_code} %{http_connect}",
    ])
    .args(args);
    for var in PROXY_VARS {
        c.env_remove(var);
    }
    c
}

/// The proxy variables clients read; tests unset them where only their own
/// settings may count.
pub const PROXY_VARS: [&str; 8] = {
    let (p, n) = (secureops_proxy::PROXY_VARIABLES, secureops_proxy::NO_PROXY_VARIABLES);
    [p[0], p[1], p[2], p[3], p[4], p[5], n[0], n[1]]
};

/// (HTTP status, body) of a [`curl_command`] run; `http_code` is 0 when a
/// CONNECT was refused, and then `http_connect` has it.
pub fn curl_status(out: &Output) -> (u16, String) {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = text.rsplit_once("\nSTATUS=").unwrap_or((&text, "0 0"));
    let status = codes
        .split_whitespace()
        .map(|c| c.parse().unwrap_or(0))
        .find(|&c| c != 0)
        .unwrap_or(0);
    (status, body.to_owned())
}

/// Reads one response head (and its `Content-Length` body); returns the
/// status (0 when none came) and the body.
pub fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (0, String::new()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while got.len() < head_end + length {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = String::from_utf8_lossy(&got[head_end.min(got.len())..]).into_owned();
    (status, body)
}

/// Sends raw bytes to the proxy and reads until it closes (or `wait`).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The guard's state folder for a test working in `dir` (`XDG_STATE_HOME`,
/// so audit anchors land there, not in `/var/lib/secureops` of the host).
pub fn state_home(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap().join("state")
}

/// Runs the binary with `args` in `dir` (state in [`state_home`]),
/// returning its output.
pub fn secureops(args: &[&str], dir: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("XDG_STATE_HOME", state_home(dir))
        .output()
        .unwrap()
}

/// Host pids whose `/proc/PID/cmdline` is exactly `cmdline` (arguments
/// separated by NUL, as the kernel keeps them; no trailing NUL).
pub fn pids_of(cmdline: &str) -> Vec<u32> {
    let want = format!("{cmdline}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .collect()
}
