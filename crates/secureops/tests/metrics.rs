//! `[metrics]` and the operational logs, end to end: the real binary, real
//! clients (curl, dig, raw sockets), `/metrics` scraped over HTTP and
//! checked by `promtool` when it is installed (`scripts/deps.sh test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::FakeInternet;
use support::{Canary, HttpOrigin, Proxy};

/// One scrape: the content type and the samples (`name{labels}` → value).
struct Scrape {
    content_type: String,
    body: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// A sample's value; absent counts as 0.
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Sum over every series of a metric.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }
}

/// `GET /metrics` over a raw socket (HTTP/1.1, `Connection: close`).
fn http_get(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (head, body) = http_get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect();
    Scrape {
        content_type,
        body,
        samples,
    }
}

/// `promtool check metrics` on a scrape, when promtool is installed.
fn promtool_accepts(body: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIP promtool check: promtool not installed (scripts/deps.sh test installs Debian's prometheus)");
        return;
    };
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dig(dns: SocketAddr, name: &str) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "+time=3", "+tries=1", name, "A"])
        .output()
        .expect("dig (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The audit log's decisions grouped as `secureops_decisions_total` labels
/// them.
fn audit_series(entries: &[serde_json::Value]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for e in entries.iter().filter(|e| e["kind"] == "egress" || e["kind"] == "dns") {
        let key = format!(
            "secureops_decisions_total{{kind=\"{}\",decision=\"{}\",via=\"{}\"}}",
            e["kind"].as_str().unwrap(),
            e["decision"].as_str().unwrap(),
            e["via"].as_str().unwrap_or("none"),
        );
        *out.entry(key).or_insert(0.0) += 1.0;
    }
    out
}

fn decision_series(s: &Scrape) -> BTreeMap<String, f64> {
    s.samples
        .iter()
        .filter(|(k, v)| k.starts_with("secureops_decisions_total{") && **v > 0.0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// A CONNECT tunnel to `target` with one HTTP exchange through it, left
/// open; returns the stream and the bytes sent and received in the tunnel.
fn open_tunnel(proxy: SocketAddr, target: &str) -> (TcpStream, usize, usize) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let request = format!("GET /through-the-tunnel HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    // The origin keeps the connection open: read exactly one response.
    let mut received = 0;
    let mut length = 0;
    loop {
        line.clear();
        received += reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (s, request.len(), received + length)
}

#[test]
fn metrics_count_allowed_denied_and_dns_requests_exactly() {
    let origin = HttpOrigin::start();
    let canary = Canary::start();
    let (op, cp) = (origin.port(), canary.port());
    let proxy = Proxy::start(&format!(
        "[network]\negress_allowlist = [\"allowed.test:{op}\"]\nprivate_destinations = [\"127.0.0.0/8\"]\n\
         [dns]\nupstream = []\nhosts = {{ \"allowed.test\" = [\"127.0.0.1\"], \"denied.test\" = [\"127.0.0.1\"] }}\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let metrics = proxy.listening("metrics");
    let before = scrape(metrics);
    assert_eq!(before.content_type, "text/plain; version=0.0.4; charset=utf-8");
    promtool_accepts(&before.body);

    // Allowed: two plain HTTP requests and one CONNECT tunnel.
    for path in ["a", "b"] {
        let (code, body) = support::curl(&proxy, &[&format!("http://allowed.test:{op}/{path}")]);
        assert_eq!(code, 200, "{body}");
    }
    let (tunnel, up, down) = open_tunnel(proxy.addr, &format!("allowed.test:{op}"));
    // Denied: one plain request, one CONNECT, both to the canary.
    let (code, _) = support::curl(&proxy, &[&format!("http://denied.test:{cp}/secret")]);
    assert_eq!(code, 403);
    let refused = support::raw_exchange(
        proxy.addr,
        format!("CONNECT denied.test:{cp} HTTP/1.1\r\nHost: denied.test:{cp}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    canary.assert_untouched();
    // DNS: one allowed name, one that is not.
    assert!(dig(proxy.dns, "allowed.test").contains("status: NOERROR"));
    assert!(dig(proxy.dns, "exfil.example").contains("status: NXDOMAIN"));

    let during = scrape(metrics);
    let delta = |series: &str| during.get(series) - before.get(series);
    let d = |kind: &str, decision: &str, via: &str| {
        delta(&format!(
            "secureops_decisions_total{{kind=\"{kind}\",decision=\"{decision}\",via=\"{via}\"}}"
        ))
    };
    assert_eq!(d("egress", "allow", "http"), 2.0);
    assert_eq!(d("egress", "allow", "connect"), 1.0);
    assert_eq!(d("egress", "deny", "http"), 1.0);
    assert_eq!(d("egress", "deny", "connect"), 1.0);
    assert_eq!(d("dns", "allow", "dns"), 1.0);
    assert_eq!(d("dns", "deny", "dns"), 1.0);
    assert_eq!(
        during.sum("secureops_decisions_total") - before.sum("secureops_decisions_total"),
        7.0
    );
    assert_eq!(delta("secureops_refusals_total{reason=\"policy\"}"), 2.0);
    assert_eq!(
        during.sum("secureops_refusals_total") - before.sum("secureops_refusals_total"),
        2.0
    );
    assert_eq!(delta("secureops_dns_queries_total{answer=\"hosts\"}"), 1.0);
    assert_eq!(delta("secureops_dns_queries_total{answer=\"sinkhole\"}"), 1.0);
    assert_eq!(during.get("secureops_tunnels_active"), 1.0);
    assert_eq!(delta("secureops_relayed_bytes_total{direction=\"up\"}"), up as f64);
    assert_eq!(delta("secureops_relayed_bytes_total{direction=\"down\"}"), down as f64);
    // Every egress decision asked the PDP once; DNS asks the allowlist.
    assert_eq!(delta("secureops_pdp_seconds_count"), 5.0, "{}", during.body);
    assert_eq!(delta("secureops_audit_entries_total"), 7.0);
    assert_eq!(delta("secureops_audit_group_entries_sum"), 7.0);
    assert!(delta("secureops_audit_group_entries_count") >= 1.0);
    assert!(
        during.get("secureops_audit_sync_seconds_count") >= 1.0,
        "the start entry is synced"
    );
    assert_eq!(during.get("secureops_escalations_pending"), 0.0);
    assert!(during.get("process_resident_memory_bytes") > 1e6);
    assert!(during.get("process_open_fds") >= 5.0);
    assert!(during.get("process_max_fds") >= during.get("process_open_fds"));
    assert!(during.samples.contains_key("process_cpu_seconds_total"));
    assert!(during.get("process_start_time_seconds") > 1.7e9);
    // The counters say what the audit log says, series by series.
    assert_eq!(decision_series(&during), audit_series(&proxy.wait_decisions(7)));
    // No destination ever becomes a label.
    for name in ["allowed.test", "denied.test", "exfil.example", "127.0.0.1"] {
        assert!(!during.body.contains(name), "{name} in the scrape");
    }
    promtool_accepts(&during.body);

    drop(tunnel);
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(metrics).get("secureops_tunnels_active") != 0.0 {
        assert!(Instant::now() < deadline, "the closed tunnel is still counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(proxy.stop().success());
}

#[test]
fn the_metrics_listener_serves_only_get_metrics_and_is_off_without_the_section() {
    let proxy = Proxy::start("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let metrics = proxy.listening("metrics");
    let (head, _) = http_get(metrics, "GET / HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(
        metrics,
        "POST /metrics HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let (head, body) = http_get(
        metrics,
        "HEAD /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200") && body.is_empty(), "{head}{body}");
    assert!(proxy.stop().success());

    // Without [metrics]: no listener, no line.
    let plain = Proxy::start("");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!plain.stdout.lock().unwrap().contains("metrics"));
}

#[test]
fn a_bad_metrics_section_is_an_error_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    for (text, at, what) in [
        ("[metrics]\nlisten = \"127.0.0.1:9464\"\nport = 9\n", ":3:1:", "port"),
        ("[metrics]\nlisten = \"nowhere\"\n", ":2:10:", "invalid"),
        ("[metrics]\n", ":1:1:", "listen"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = support::secureops(&["config", "validate", path.to_str().unwrap()], dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(at) && err.contains(what), "{text}: {err}");
    }
}

/// `secureops proxy` with `args` and `env`, stopped after a denied request;
/// returns its stderr lines.
fn proxy_logs(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[dns]\nlisten = \"127.0.0.1:0\"\nupstream = []\n",
    )
    .unwrap();
    let mut command = Command::new(support::bin());
    command
        .args(["proxy", "-c"])
        .arg(&config)
        .args(args)
        .current_dir(dir.path())
        .env("XDG_STATE_HOME", support::state_home(dir.path()))
        .env_remove("SECUREOPS_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening proxy=").unwrap().parse().unwrap();
    let refused = support::raw_exchange(
        addr,
        b"CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    err.lines().map(str::to_owned).collect()
}

fn messages(lines: &[serde_json::Value]) -> Vec<&str> {
    lines.iter().filter_map(|l| l["message"].as_str()).collect()
}

#[test]
fn json_logs_are_one_flat_object_a_line_and_say_start_listeners_and_stop() {
    let lines = proxy_logs(&["--log-format", "json"], &[]);
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &parsed {
        assert!(l["timestamp"].is_string(), "{l}");
        assert!(l["level"].is_string(), "{l}");
        assert!(l["message"].is_string(), "message must be top-level: {l}");
        assert_eq!(l["level"], "INFO", "default level is info: {l}");
    }
    let msgs = messages(&parsed);
    for want in [
        "secureops proxy starting",
        "audit log open",
        "proxy listening",
        "DNS sinkhole listening (UDP and TCP)",
        "shutting down",
        "audit log closed",
    ] {
        assert!(msgs.contains(&want), "no {want:?} in {msgs:?}");
    }
    let start = parsed
        .iter()
        .find(|l| l["message"] == "secureops proxy starting")
        .unwrap();
    assert!(start["config"].as_str().unwrap().ends_with("c.toml"), "{start}");
    let tier = parsed.iter().find(|l| l["tier"].is_string()).unwrap();
    assert_eq!(tier["tier"], "proxy-only");
    let audit = parsed.iter().find(|l| l["message"] == "audit log open").unwrap();
    assert!(
        audit["path"].as_str().unwrap().ends_with("secureops-audit.jsonl"),
        "{audit}"
    );
    // The decision is the audit log's: no log line names its host.
    assert!(!lines.iter().any(|l| l.contains("denied.test")), "{lines:?}");
}

#[test]
fn text_logs_by_default_and_the_level_comes_from_secureops_log_then_rust_log() {
    let text = proxy_logs(&[], &[]);
    assert!(
        text.iter()
            .any(|l| l.contains(" INFO ") && l.contains("proxy listening")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{text:?}"
    );
    assert!(!text.iter().any(|l| l.contains("DEBUG")), "{text:?}");

    let level = |env: &[(&str, &str)]| -> Vec<String> {
        let lines = proxy_logs(&["--log-format", "json"], env);
        lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["level"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let debug = level(&[("SECUREOPS_LOG", "debug")]);
    assert!(debug.iter().any(|l| l == "DEBUG"), "{debug:?}");
    let from_rust_log = level(&[("RUST_LOG", "debug")]);
    assert!(from_rust_log.iter().any(|l| l == "DEBUG"), "{from_rust_log:?}");
    // SECUREOPS_LOG wins over RUST_LOG.
    let quiet = level(&[("SECUREOPS_LOG", "warn"), ("RUST_LOG", "debug")]);
    assert!(quiet.iter().all(|l| l == "WARN" || l == "ERROR"), "{quiet:?}");
}

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn metrics_under_run_are_served_on_the_host_side_and_count_the_commands_decisions() {
    let Some(net) = FakeInternet::start() else { return };
    let config = net.config();
    let port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&config, text).unwrap();
    let log = net.dir.path().join("audit.jsonl");
    let ca = net.ca.display();
    let script = format!(
        r#"unset HTTPS_PROXY HTTP_PROXY ALL_PROXY https_proxy http_proxy all_proxy
curl -sS -m 10 --cacert {ca} https://allowed.test/ >/dev/null && echo ALLOWED=ok
curl -sS -m 5 --cacert {ca} https://denied.test/ >/dev/null 2>&1 && echo DENIED=reached || echo DENIED=blocked
curl -sS -m 3 http://127.0.0.1:{port}/metrics 2>/dev/null | grep -q secureops_ && echo INSIDE=reached || echo INSIDE=unreachable
echo READY
for i in $(seq 300); do [ -e go ] && break; sleep 0.1; done
"#
    );
    let mut c = Command::new(support::bin());
    c.current_dir(&net.work)
        .env("XDG_STATE_HOME", net.dir.path().join("state"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--audit")
        .arg(&log)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in support::PROXY_VARS {
        c.env_remove(v);
    }
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("READY") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("run ended early: {seen}\n{err}");
        }
        seen.push_str(&line);
    }
    assert!(seen.contains("ALLOWED=ok"), "{seen}");
    assert!(seen.contains("DENIED=blocked"), "{seen}");
    // The listener is the supervisor's, in the host's namespace.
    assert!(seen.contains("INSIDE=unreachable"), "{seen}");
    let s = scrape(SocketAddr::from(([127, 0, 0, 1], port)));
    promtool_accepts(&s.body);
    let decisions = decision_series(&s);
    let entries = support::read_entries(&log);
    assert_eq!(decisions, audit_series(&entries), "{}", s.body);
    assert_eq!(
        s.get("secureops_decisions_total{kind=\"egress\",decision=\"allow\",via=\"sni\"}"),
        1.0
    );
    assert!(s.get("secureops_decisions_total{kind=\"dns\",decision=\"deny\",via=\"dns\"}") >= 1.0);
    assert!(s.get("secureops_dns_queries_total{answer=\"sinkhole\"}") >= 1.0);
    assert!(s.get("secureops_relayed_bytes_total{direction=\"down\"}") > 0.0);
    std::fs::write(net.work.join("go"), "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(net.canary(), (0, 0, 0));
    // The listener goes with the run.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_held_escalation_is_pending_in_the_metrics_until_a_person_denies_it() {
    let canary = Canary::start();
    let curl = std::fs::canonicalize("/usr/bin/curl").unwrap();
    let proxy = Proxy::start(&format!(
        "[network]\negress_allowlist = []\nprivate_destinations = [\"127.0.0.0/8\"]\n\
         [dns]\nupstream = []\nhosts = {{ \"asked.test\" = [\"127.0.0.1\"] }}\n\
         [[context.process]]\nexe = \"{}\"\negress_allowlist = [\"asked.test:*\"]\nescalate = true\n\
         [escalation]\nescalation_timeout_ms = 20000\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        curl.display()
    ));
    let metrics = proxy.listening("metrics");
    let url = proxy.url();
    let target = format!("http://asked.test:{}/", canary.port());
    let held =
        std::thread::spawn(move || support::curl_status(&support::curl_command(&url, &[&target]).output().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(metrics).get("secureops_escalations_pending") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the held request is not pending in the metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = proxy.dir.join("secureops.toml");
    let cfg = cfg.to_str().unwrap();
    let pending = support::secureops(&["pending", "--json", "-c", cfg], std::path::Path::new("/"));
    let text = String::from_utf8_lossy(&pending.stdout);
    let id = serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).unwrap()["id"].to_string();
    let denied = support::secureops(&["deny", &id, "-c", cfg], std::path::Path::new("/"));
    assert!(denied.status.success(), "{}", String::from_utf8_lossy(&denied.stderr));
    assert_eq!(held.join().unwrap().0, 403);
    canary.assert_untouched();
    let s = scrape(metrics);
    assert_eq!(s.get("secureops_escalations_pending"), 0.0);
    assert_eq!(s.get("secureops_refusals_total{reason=\"escalation\"}"), 1.0);
    assert_eq!(
        s.get("secureops_decisions_total{kind=\"egress\",decision=\"escalate\",via=\"http\"}"),
        1.0
    );
    promtool_accepts(&s.body);
}
