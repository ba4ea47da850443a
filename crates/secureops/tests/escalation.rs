//! Escalation end to end: the real proxy holds a request that its policy
//! escalates (a `[[context.process]]` rule with `escalate = true` for curl),
//! `secureops pending` shows it, and `secureops approve` / `deny` (or the
//! timeout) settle it. Every refusal is proven on a canary, and each
//! request is exactly one audit entry, written once the outcome is known.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;

/// curl may reach `asked.test` only after a person approves; everything is
/// on loopback.
fn config(timeout_ms: u64) -> String {
    let curl = std::fs::canonicalize("/usr/bin/curl").unwrap();
    format!(
        r#"
[network]
egress_allowlist = []
private_destinations = ["127.0.0.0/8"]
[dns]
upstream = []
hosts = {{ "asked.test" = ["127.0.0.1"] }}
[[context.process]]
exe = "{}"
egress_allowlist = ["asked.test:*"]
escalate = true
[escalation]
escalation_timeout_ms = {timeout_ms}
"#,
        curl.display()
    )
}

fn config_path(proxy: &Proxy) -> String {
    proxy.dir.join("secureops.toml").to_str().unwrap().to_owned()
}

/// `secureops ARGS -c CONFIG` run from another folder.
fn cli(proxy: &Proxy, args: &[&str]) -> (i32, String, String) {
    let cfg = config_path(proxy);
    let mut all = args.to_vec();
    all.extend(["-c", &cfg]);
    let out = secureops(&all, Path::new("/"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl through the proxy on a thread (it blocks while the request is held).
fn curl_in_background(proxy: &Proxy, args: &[&str]) -> JoinHandle<(u16, String)> {
    let url = proxy.url();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    std::thread::spawn(move || curl_status(&curl_command(&url, &args).output().unwrap()))
}

/// Waits until `secureops pending --json` lists a request for `port`.
fn wait_pending(proxy: &Proxy, port: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = cli(proxy, &["pending", "--json"]);
        assert_eq!(code, 0, "pending failed: {err}");
        let found = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|p| p["port"] == port);
        if let Some(p) = found {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no pending request for port {port}: {out}\n{}",
            proxy.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit entries for `port` (waits for at least one).
fn entries_for(proxy: &Proxy, port: u16) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<_> = proxy.decisions().into_iter().filter(|e| e["port"] == port).collect();
        if !found.is_empty() || Instant::now() > deadline {
            // Give a stray second entry the chance to show up.
            std::thread::sleep(Duration::from_millis(200));
            return proxy.decisions().into_iter().filter(|e| e["port"] == port).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pending_request_shows_and_approve_lets_it_through() {
    let origin = HttpOrigin::start();
    let proxy = Proxy::start(&config(20_000));

    // The control socket: next to the config, a socket, mode 0600.
    let socket = proxy.dir.join("secureops.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (code, out, _) = cli(&proxy, &["pending"]);
    assert_eq!((code, out.trim()), (0, "no pending requests"));

    let url = format!("http://asked.test:{}/held", origin.port());
    let client = curl_in_background(&proxy, &[&url]);
    let held = wait_pending(&proxy, origin.port());
    let id = held["id"].as_u64().unwrap();
    assert_eq!(held["host"], "asked.test");
    assert!(held["exe"].as_str().unwrap().ends_with("curl"), "{held}");
    assert!(held["pid"].as_u64().is_some(), "{held}");
    assert!(held["reason"].as_str().unwrap().contains("process rule"), "{held}");
    // The table names the request, the program, the destination and why.
    let (code, table, _) = cli(&proxy, &["pending"]);
    assert_eq!(code, 0);
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("curl") && row.contains(&format!("asked.test:{}", origin.port())),
        "{table}"
    );
    // Nothing has been decided yet: no entry, and the origin saw nothing.
    assert!(proxy.decisions().is_empty());
    assert_eq!(origin.requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    let (code, out, err) = cli(&proxy, &["approve", &id.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("approved {id}")), "{out}");
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("line=GET /held HTTP/1.1"), "{body}");

    let entries = entries_for(&proxy, origin.port());
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e["decision"], "allow");
    assert!(e["exe"].as_str().unwrap().ends_with("curl"), "{e}");
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("approved by a person via secureops approve {id} (")),
        "{reason}"
    );
    assert!(reason.contains("process rule"), "{reason}");

    // Answered already: the id is no longer pending (exit 1).
    let (code, _, err) = cli(&proxy, &["deny", &id.to_string()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("no pending request {id}")), "{err}");
}

#[test]
fn deny_refuses_with_403_and_remember_refuses_later_ones_without_asking() {
    let canary = Canary::start();
    let proxy = Proxy::start(&config(20_000));
    let url = format!("http://asked.test:{}/", canary.port());
    let client = curl_in_background(&proxy, &["-d", "secret=1", &url]);
    let id = wait_pending(&proxy, canary.port())["id"].as_u64().unwrap();
    let (code, out, err) = cli(&proxy, &["deny", &id.to_string(), "--remember"]);
    assert_eq!(code, 0, "{out}{err}");
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("denied by a person"), "{body}");

    let entries = entries_for(&proxy, canary.port());
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["decision"], "escalate");
    assert_eq!(entries[0]["status"], 403);
    let reason = entries[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("denied by a person via secureops deny {id} --remember (")),
        "{reason}"
    );

    // Remembered: the next escalation to that destination is refused at
    // once, and says who ruled it out.
    let started = Instant::now();
    let (status, body) = curl(&proxy, &["-d", "secret=2", &url]);
    assert_eq!(status, 403, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        body.contains(&format!("denied by a person earlier (secureops deny {id} --remember)")),
        "{body}"
    );
    let (_, out, _) = cli(&proxy, &["pending"]);
    assert_eq!(out.trim(), "no pending requests");
    assert_eq!(entries_for(&proxy, canary.port()).len(), 2);
    canary.assert_untouched();
}

#[test]
fn no_answer_within_the_timeout_is_a_refusal() {
    let canary = Canary::start();
    let proxy = Proxy::start(&config(1000));
    let started = Instant::now();
    // A CONNECT tunnel this time: refused before `200`, nothing upstream.
    let (status, body) = curl(&proxy, &[&format!("https://asked.test:{}/", canary.port())]);
    let waited = started.elapsed();
    assert_eq!(status, 403, "{body}");
    assert!(waited >= Duration::from_millis(900), "held for {waited:?}");
    assert!(waited < Duration::from_secs(10), "held for {waited:?}");
    canary.assert_untouched();
    let entries = entries_for(&proxy, canary.port());
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["decision"], "escalate");
    assert_eq!(entries[0]["via"], "connect");
    let reason = entries[0]["reason"].as_str().unwrap();
    assert!(reason.contains("no answer within 1000 ms"), "{reason}");
    let (_, out, _) = cli(&proxy, &["pending"]);
    assert_eq!(out.trim(), "no pending requests");
}

#[test]
fn stopping_the_proxy_refuses_what_is_held_and_the_log_verifies() {
    let canary = Canary::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(dir.path(), &config(20_000));
    let client = curl_in_background(&proxy, &[&format!("http://asked.test:{}/", canary.port())]);
    wait_pending(&proxy, canary.port());
    let audit = proxy.audit_path();
    assert!(proxy.stop().success());
    assert!(
        !dir.path().join("secureops.sock").exists(),
        "the socket is removed on stop"
    );
    let (status, _) = client.join().unwrap();
    assert_eq!(status, 403);
    canary.assert_untouched();
    let entries = read_entries(&audit);
    let held: Vec<_> = entries.iter().filter(|e| e["port"] == canary.port()).collect();
    assert_eq!(held.len(), 1, "{entries:?}");
    assert_eq!(held[0]["decision"], "escalate");
    assert!(
        held[0]["reason"].as_str().unwrap().contains("proxy is stopping"),
        "{}",
        held[0]
    );
    let out = secureops(&["audit", "verify", audit.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_commands_say_when_no_proxy_answers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "[escalation]\nsocket = \"nobody.sock\"\n").unwrap();
    for args in [&["pending"][..], &["approve", "1"], &["deny", "1", "--remember"]] {
        let mut all = args.to_vec();
        all.extend(["-c", "c.toml"]);
        let out = secureops(&all, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("nobody.sock"), "{args:?}");
    }
}

#[test]
fn a_path_that_is_not_a_socket_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secureops.sock"), "precious").unwrap();
    let cfg = dir.path().join("secureops.toml");
    let text = format!("{}\n[proxy]\nlisten = \"127.0.0.1:0\"\n", config(1000))
        .replace("[dns]\n", "[dns]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&cfg, text).unwrap();
    let out = secureops(&["proxy", "-c", cfg.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secureops.sock")).unwrap(),
        "precious"
    );
}
