//! Black-box tests of the audit log through the real binary: the proxy writes
//! it, `secureops audit verify|show` and `secureops keygen` read and make it.
//! Every claim of the README's audit paragraph is checked on real files:
//! one gap-free entry per decision, tamper evidence naming the line, crash
//! and restart, key permissions, rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Canary, HttpOrigin, Proxy, read_entries, read_response, secureops};

/// Allowlist + static names, all on loopback (listed as private destination).
/// `denied.test` also resolves to loopback: a refusal that leaked would reach
/// the canary listening there.
fn config(extra: &str) -> String {
    format!(
        r#"
[network]
egress_allowlist = ["web.test:*"]
private_destinations = ["127.0.0.0/8"]
[dns]
upstream = []
hosts = {{ "web.test" = ["127.0.0.1"], "denied.test" = ["127.0.0.1"] }}
{extra}
"#
    )
}

/// Exit code, stdout and stderr of `secureops ARGS` run in `dir`.
fn run(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = secureops(args, dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `secureops audit verify FILES... EXTRA...`.
fn verify(files: &[&Path], extra: &[&str], dir: &Path) -> (i32, String, String) {
    let mut args = vec!["audit", "verify"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend_from_slice(extra);
    run(&args, dir)
}

/// Reads one HTTP response (head + `Content-Length` body) from `s`; returns
/// its status (0 when none came).
fn read_status(s: &mut TcpStream) -> u16 {
    read_response(s).0
}

/// Sends `request` on a new connection to the proxy; returns the status.
fn exchange(proxy: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    read_status(&mut s)
}

/// An absolute-form `GET` for `host:port` through the proxy.
fn get(proxy: SocketAddr, host: &str, port: u16, path: &str) -> u16 {
    exchange(
        proxy,
        &format!("GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"),
    )
}

/// A `CONNECT host:port` through the proxy.
fn connect(proxy: SocketAddr, host: &str, port: u16) -> u16 {
    exchange(
        proxy,
        &format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"),
    )
}

/// `curl` through `proxy_url` with a short timeout; the HTTP status (0 when
/// the request failed).
fn curl_status(proxy_url: &str, url: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "5", "-x", proxy_url])
        .args(["-w", "%{http_code}", url])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// The raw lines of a file, each with its `\n` (a torn last line without).
fn raw_lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).unwrap();
}

/// The `FAILED FILE:LINE: why` line of a failed verify; asserts exit 1.
#[track_caller]
fn failure(result: &(i32, String, String), file: &Path, line: usize) -> String {
    let (code, out, err) = result;
    assert_eq!(*code, 1, "verify should fail with 1; stdout: {out} stderr: {err}");
    let prefix = format!("FAILED {}:{line}: ", file.display());
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("expected {prefix:?} in the output, got: {out}"))
        .to_owned()
}

/// Number of `egress` entries with `decision`.
fn count(entries: &[serde_json::Value], decision: &str) -> usize {
    entries
        .iter()
        .filter(|e| e["kind"] == "egress" && e["decision"] == decision)
        .count()
}

/// Asserts that the entries of a series are `seq` 0, 1, 2, … in order, that
/// each `prev` is the hash-chained previous line (checked by verify), and
/// that the last is a `stop` whose `count` covers them all.
#[track_caller]
fn assert_gap_free(entries: &[serde_json::Value]) {
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "entry {i} has seq {}", e["seq"]);
    }
    let last = entries.last().unwrap();
    assert_eq!(last["kind"], "stop", "{last}");
    assert_eq!(last["count"], entries.len() as u64, "{last}");
}

/// Waits for `child` to exit, at most `limit`; kills it and fails otherwise.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A closed log with `allowed` allowed GETs and `denied` refused CONNECTs,
/// made one after the other (one group, one signature each), then, with
/// `batched`, concurrent bursts of allowed GETs until the log holds unsigned
/// lines (grouped entries covered by a later signature).
fn closed_log(allowed: usize, denied: usize, batched: bool) -> (tempfile::TempDir, PathBuf) {
    let origin = HttpOrigin::start();
    let canary = Canary::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(dir.path(), &config(""));
    for i in 0..allowed.max(denied) {
        if i < allowed {
            assert_eq!(get(proxy.addr, "web.test", origin.port(), &format!("/{i}")), 200);
        }
        if i < denied {
            assert_eq!(connect(proxy.addr, "denied.test", canary.port()), 403);
        }
    }
    let log = proxy.audit_path();
    let mut burst = 0;
    for _round in 0..5 {
        if !batched || std::fs::read_to_string(&log).unwrap().contains("\"sig\":null") {
            break;
        }
        let (addr, port) = (proxy.addr, origin.port());
        std::thread::scope(|s| {
            for t in 0..8 {
                s.spawn(move || {
                    for i in 0..4 {
                        assert_eq!(get(addr, "web.test", port, &format!("/b{t}/{i}")), 200);
                    }
                });
            }
        });
        burst += 32;
    }
    assert!(proxy.stop().success());
    canary.assert_untouched();
    assert_eq!(read_entries(&log).len(), allowed + denied + burst + 2);
    (dir, log)
}

/// `line` with one bit flipped in its host (`web.test` -> `veb.test`): still
/// valid canonical JSON, so only the chain and signatures can tell.
fn flip_host(line: &[u8]) -> Vec<u8> {
    let mut line = line.to_vec();
    let at = line.windows(10).position(|w| w == b"\"web.test\"").unwrap() + 1;
    line[at] ^= 0x01;
    assert!(serde_json::from_slice::<serde_json::Value>(&line).is_ok());
    line
}

// 1. ---------------------------------------------------------------------

#[test]
fn concurrent_decisions_are_one_gap_free_entry_each_and_the_log_verifies() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 5; // allowed GETs and denied CONNECTs each
    let origin = HttpOrigin::start();
    let canary = Canary::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(dir.path(), &config(""));
    let (addr, port, canary_port) = (proxy.addr, origin.port(), canary.port());
    let statuses: Vec<(u16, u16)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let ok = get(addr, "web.test", port, &format!("/t{t}/{i}"));
                            let refused = connect(addr, "denied.test", canary_port);
                            (ok, refused)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let k = THREADS * PER_THREAD * 2;
    assert!(statuses.iter().all(|&(ok, _)| ok == 200), "{statuses:?}");
    assert!(statuses.iter().all(|&(_, refused)| refused == 403), "{statuses:?}");
    assert_eq!(origin.requests.load(Ordering::SeqCst), (k / 2) as u64);
    let log = proxy.audit_path();
    let key_pub = dir.path().join("secureops-audit.key.pub");
    assert!(proxy.stop().success());
    canary.assert_untouched();

    let entries = read_entries(&log);
    assert_eq!(entries.len(), k + 2, "one entry per decision plus start and stop");
    assert_eq!(entries[0]["kind"], "start");
    assert_eq!(count(&entries, "allow"), k / 2);
    assert_eq!(count(&entries, "deny"), k / 2);
    assert_gap_free(&entries);
    for e in &entries[1..=k] {
        assert_eq!(e["kind"], "egress", "{e}");
        if e["decision"] == "allow" {
            assert_eq!(
                (&e["host"], &e["port"], &e["via"]),
                (&"web.test".into(), &port.into(), &"http".into())
            );
        } else {
            assert_eq!(
                (&e["host"], &e["via"], &e["status"]),
                (&"denied.test".into(), &"connect".into(), &403.into())
            );
        }
    }

    let fingerprint = entries[0]["fingerprint"].as_str().unwrap();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let (code, out, err) = verify(&[&log], &[], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(format!("ok {} entries", k + 2).as_str()), "{out}");
    let trust = lines.next().unwrap_or_default();
    assert!(
        trust.contains("trusting the key recorded in the log's first entry"),
        "{out}"
    );
    assert!(trust.contains(fingerprint), "{out}");

    let (code, out, err) = verify(&[&log], &["--pubkey", key_pub.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("ok {} entries\n", k + 2)), "{out}");
    assert!(out.contains(&format!("key pinned: {fingerprint}")), "{out}");
    assert!(!out.contains("trusting"), "{out}");
}

// 2. ---------------------------------------------------------------------

#[test]
fn tampering_is_named_by_line_and_kind() {
    // Lines: 1 start, 2..=13 egress (allow, deny alternating, each signed),
    // then batched allow entries (some unsigned), then the stop.
    let (dir, log) = closed_log(6, 6, true);
    let d = dir.path();
    let original = raw_lines(&log);
    let n = original.len();
    let (code, out, _) = verify(&[&log], &[], d);
    assert_eq!(code, 0, "{out}");
    let tampered = d.join("tampered.jsonl");
    let unsigned = |i: usize| String::from_utf8_lossy(&original[i]).contains("\"sig\":null");

    // One flipped bit in a signed line: its own signature fails.
    assert!(!unsigned(5), "{}", String::from_utf8_lossy(&original[5]));
    let mut lines = original.clone();
    lines[5] = flip_host(&lines[5]);
    write_lines(&tampered, &lines);
    let why = failure(&verify(&[&tampered], &[], d), &tampered, 6);
    assert!(why.starts_with("bad signature: the line was modified"), "{why}");

    // In an unsigned line: the next line's `prev`, proven by a later
    // signature, blames it (not the innocent next line).
    let i = (13..n - 1)
        .find(|&i| unsigned(i))
        .expect("no unsigned line in the batched part");
    let mut lines = original.clone();
    lines[i] = flip_host(&lines[i]);
    write_lines(&tampered, &lines);
    let why = failure(&verify(&[&tampered], &[], d), &tampered, i + 1);
    assert!(why.starts_with("line was modified"), "{why}");

    // A deleted line: the next one is a sequence gap.
    let mut lines = original.clone();
    lines.remove(6);
    write_lines(&tampered, &lines);
    let why = failure(&verify(&[&tampered], &[], d), &tampered, 7);
    assert!(why.starts_with("sequence gap: expected seq 6, found 7"), "{why}");
    assert!(why.contains("missing"), "{why}");

    // An inserted copy of an earlier line.
    let mut lines = original.clone();
    lines.insert(9, original[3].clone());
    write_lines(&tampered, &lines);
    let why = failure(&verify(&[&tampered], &[], d), &tampered, 10);
    assert!(why.starts_with("duplicate entry: seq 3 appears again"), "{why}");

    // Two lines swapped.
    let mut lines = original.clone();
    lines.swap(7, 8);
    write_lines(&tampered, &lines);
    let why = failure(&verify(&[&tampered], &[], d), &tampered, 8);
    assert!(why.starts_with("lines reordered: expected seq 7"), "{why}");
    assert!(why.contains("found 8"), "{why}");

    // Tail cut in the middle of the stop line: torn.
    let mut lines = original.clone();
    let stop = lines.pop().unwrap();
    lines.push(stop[..stop.len() / 2].to_vec());
    write_lines(&tampered, &lines);
    let why = failure(&verify(&[&tampered], &[], d), &tampered, n);
    assert!(why.starts_with("torn last line"), "{why}");
    let why = failure(&verify(&[&tampered], &["--open"], d), &tampered, n);
    assert!(why.starts_with("torn last line"), "{why}");

    // The whole stop line removed: not closed, unless --open.
    let mut lines = original.clone();
    lines.pop();
    write_lines(&tampered, &lines);
    let result = verify(&[&tampered], &[], d);
    let why = failure(&result, &tampered, n - 1);
    assert!(why.starts_with("not closed"), "{why}");
    assert!(
        result.1.contains("--open"),
        "the output should say how to verify a live log: {}",
        result.1
    );
    let (code, out, err) = verify(&[&tampered], &["--open"], d);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("ok {} entries\n", n - 1)), "{out}");
    assert!(out.contains("log is open"), "{out}");

    // The intact log against someone else's key.
    let (code, out, err) = run(&["keygen", "--out", "other.key"], d);
    assert_eq!(code, 0, "{out}{err}");
    let other_fp = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap()
        .to_owned();
    let log_fp = read_entries(&log)[0]["fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(other_fp, log_fp);
    let other_pub = d.join("other.key.pub");
    let why = failure(&verify(&[&log], &["--pubkey", other_pub.to_str().unwrap()], d), &log, 1);
    assert!(why.starts_with("wrong key"), "{why}");
    assert!(why.contains(&other_fp) && why.contains(&log_fp), "{why}");

    // The untouched original still verifies (nothing above changed it).
    assert_eq!(raw_lines(&log), original);
    assert_eq!(verify(&[&log], &[], d).0, 0);
}

// 3. ---------------------------------------------------------------------

#[test]
fn sigkill_under_load_then_restart_keeps_every_acknowledged_entry() {
    const THREADS: usize = 8;
    // Far more than fit in the 2 s the load lasts; only bounds the loop.
    const MAX_PER_THREAD: usize = 1000;
    let origin = HttpOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("");
    let proxy = Proxy::start_at(dir.path(), &cfg);
    let log = proxy.audit_path();
    let proxy_url = proxy.url();
    let url = format!("http://web.test:{}/", origin.port());
    let pid = proxy.child.id().to_string();
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let load_ends = Instant::now() + Duration::from_secs(2);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..MAX_PER_THREAD {
                    if Instant::now() > load_ends {
                        break;
                    }
                    if curl_status(&proxy_url, &url) == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        // Mid-load: kill -9, no chance to write a stop entry.
        std::thread::sleep(Duration::from_millis(1000));
        let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(killed.success());
    });
    drop(proxy); // reaps the killed child
    let ok = ok.load(Ordering::SeqCst);
    let reached = origin.requests.load(Ordering::SeqCst);
    assert!(ok > 0, "no request got through before the kill");
    assert!(failed.load(Ordering::SeqCst) > 0, "the kill did not interrupt the load");

    // Every request the origin saw (so every 200 a client saw) was audited
    // before it was relayed.
    let before = read_entries(&log);
    let allowed = count(&before, "allow") as u64;
    assert!(
        allowed >= reached && reached >= ok,
        "allow entries {allowed}, origin saw {reached}, clients got {ok}"
    );
    assert_ne!(before.last().unwrap()["kind"], "stop");
    let torn = std::fs::read(&log).unwrap().last() != Some(&b'\n');
    let lines_before = raw_lines(&log).len() - usize::from(torn);
    let (code, out, _) = verify(&[&log], &["--open"], dir.path());
    if torn {
        assert_eq!(code, 1, "{out}");
    } else {
        assert_eq!(code, 0, "the killed log should verify as open: {out}");
        assert!(out.starts_with(&format!("ok {lines_before} entries\n")), "{out}");
    }
    let (code, out, _) = verify(&[&log], &[], dir.path());
    assert_eq!(code, 1, "a log without its stop entry must not pass: {out}");

    // Restart on the same folder: the chain continues.
    let proxy = Proxy::start_at(dir.path(), &cfg);
    let (code, out, err) = verify(&[&log], &["--open"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("ok {} entries\n", lines_before + 1)), "{out}");
    assert_eq!(curl_status(&proxy.url(), &url), 200);
    assert!(proxy.stop().success());
    let entries = read_entries(&log);
    let restart = &entries[lines_before];
    assert_eq!(
        (&restart["kind"], &restart["reason"]),
        (&"start".into(), &"restart".into()),
        "{restart}"
    );
    assert!(
        restart["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("without a stop entry"),
        "{restart}"
    );
    assert_eq!(count(&entries, "allow") as u64, allowed + 1);
    assert_gap_free(&entries);
    let (code, out, err) = verify(&[&log], &[], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("ok {} entries\n", entries.len())), "{out}");
}

#[test]
fn a_torn_tail_fails_verify_and_is_moved_aside_on_restart() {
    let origin = HttpOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("");
    let mut proxy = Proxy::start_at(dir.path(), &cfg);
    for i in 0..3 {
        assert_eq!(get(proxy.addr, "web.test", origin.port(), &format!("/{i}")), 200);
    }
    let log = proxy.audit_path();
    proxy.child.kill().unwrap();
    proxy.child.wait().unwrap();
    drop(proxy);
    // A crash in the middle of a write: half of a line, no newline.
    let lines = raw_lines(&log);
    assert_eq!(lines.len(), 4);
    let half = lines[3][..lines[3].len() / 2].to_vec();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(&half)
        .unwrap();
    let why = failure(&verify(&[&log], &["--open"], dir.path()), &log, 5);
    assert!(why.starts_with("torn last line"), "{why}");

    let proxy = Proxy::start_at(dir.path(), &cfg);
    let (code, out, err) = verify(&[&log], &["--open"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok 5 entries\n"), "{out}");
    let mut torn_path = log.clone().into_os_string();
    torn_path.push(".torn");
    // Kept as evidence, one fragment per line.
    assert_eq!(std::fs::read(&torn_path).unwrap(), [&half[..], b"\n"].concat());
    assert!(proxy.stop().success());
    let entries = read_entries(&log);
    let detail = entries[4]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("torn last line of {} bytes", half.len())),
        "{detail}"
    );
    // `audit show` tells the reader about it.
    let (code, out, err) = run(&["audit", "show", log.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    let row = out.lines().nth(5).unwrap();
    assert!(row.contains("restart") && row.contains(detail), "{out}");
    assert_gap_free(&entries);
    let (code, out, err) = verify(&[&log], &[], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok 6 entries\n"), "{out}");
}

// 4. ---------------------------------------------------------------------

#[test]
fn keygen_makes_a_private_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = run(&["keygen", "--out", "k.key"], d);
    assert_eq!(code, 0, "{out}{err}");
    let key = d.join("k.key");
    let public = d.join("k.key.pub");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let private_pem = std::fs::read_to_string(&key).unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{private_pem}");
    let public_pem = std::fs::read_to_string(&public).unwrap();
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{public_pem}");
    let fingerprint = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap()
        .to_owned();
    assert!(fingerprint.starts_with("SHA256:"), "{out}");

    // A second keygen on the same name is refused and changes nothing.
    let (code, out, err) = run(&["keygen", "--out", "k.key"], d);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private_pem);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_pem);

    // The key signs a proxy's log, and pinning its .pub verifies it.
    let proxy = Proxy::start_at(d, &config("[audit]\nsigning_key = \"k.key\"\n"));
    let log = proxy.audit_path();
    assert!(proxy.stop().success());
    assert_eq!(read_entries(&log)[0]["fingerprint"], fingerprint.as_str());
    let (code, out, err) = verify(&[&log], &["--pubkey", "k.key.pub"], d);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("key pinned: {fingerprint}")), "{out}");
}

#[test]
fn a_key_readable_by_others_stops_the_proxy_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = run(&["keygen", "--out", "k.key"], d);
    assert_eq!(code, 0, "{out}{err}");
    let key = d.join("k.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = d.join("secureops.toml");
    let text = config("[audit]\nsigning_key = \"k.key\"\n[proxy]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&cfg, text.replace("[dns]\n", "[dns]\nlisten = \"127.0.0.1:0\"\n")).unwrap();
    let started = Instant::now();
    let mut child = Command::new(support::bin())
        .args(["proxy", "-c"])
        .arg(&cfg)
        .current_dir(d)
        .env("XDG_STATE_HOME", support::state_home(d))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(!out.contains("listening"), "it must not serve: {out}");
    assert!(err.contains("0644"), "{err}");
    assert!(err.contains(&format!("chmod 600 {}", key.display())), "{err}");
    // Nothing was logged with a key others may have read.
    let log = d.join("secureops-audit.jsonl");
    assert!(read_entries(&log).is_empty());

    // Following the advice fixes it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let proxy = Proxy::start_at(d, &config("[audit]\nsigning_key = \"k.key\"\n"));
    assert!(proxy.stop().success());
    assert_eq!(verify(&[&log], &["--pubkey", "k.key.pub"], d).0, 0);
}

// 5. ---------------------------------------------------------------------

#[test]
fn show_prints_a_table_filters_and_passes_json_through() {
    let (dir, log) = closed_log(3, 2, false);
    let d = dir.path();
    let entries = read_entries(&log);
    let file = std::fs::read_to_string(&log).unwrap();
    let log_arg = log.to_str().unwrap();

    let (code, out, err) = run(&["audit", "show", log_arg], d);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 1 + entries.len(), "{out}");
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(header, ["TIME", "DECISION", "PID/EXE", "HOST:PORT", "REASON"], "{out}");
    for (row, e) in rows[1..].iter().zip(&entries) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], e["ts"].as_str().unwrap(), "{row}");
        let (what, dest) = if e["kind"] == "egress" {
            let dest = format!("{}:{}", e["host"].as_str().unwrap(), e["port"]);
            (e["decision"].as_str().unwrap(), dest)
        } else {
            (e["kind"].as_str().unwrap(), "-".to_owned())
        };
        let who = match (e["pid"].as_u64(), e["exe"].as_str()) {
            (Some(pid), Some(exe)) => format!("{pid}/{}", exe.rsplit('/').next().unwrap()),
            (Some(pid), None) => format!("{pid}/"),
            _ => "-".to_owned(),
        };
        assert_eq!(cols[1..4], [what, &who, &dest], "{row}");
        assert_eq!(cols[4..].join(" "), e["reason"].as_str().unwrap(), "{row}");
    }
    // The writer is named on the start row.
    let start = rows[1].split_whitespace().nth(2).unwrap();
    assert!(start.ends_with("/secureops"), "{}", rows[1]);
    assert!(
        rows[3].contains("denied.test:") && rows[3].contains("not in the egress allowlist"),
        "{}",
        rows[3]
    );

    let (code, out, err) = run(&["audit", "show", log_arg, "--decision", "deny"], d);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows.iter().all(|r| r.split_whitespace().nth(1) == Some("deny")),
        "{out}"
    );
    assert!(rows.iter().all(|r| r.contains("denied.test:")), "{out}");

    // --json: the file itself, byte for byte; filtered, exactly its deny lines.
    let (code, out, err) = run(&["audit", "show", log_arg, "--json"], d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, file);
    let (code, out, err) = run(&["audit", "show", log_arg, "--json", "--decision", "deny"], d);
    assert_eq!(code, 0, "{err}");
    let want: String = file
        .split_inclusive('\n')
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["decision"] == "deny")
        .collect();
    assert_eq!(out, want);
    assert_eq!(out.lines().count(), 2);
    let (code, out, _) = run(&["audit", "show", log_arg, "--json", "--decision", "allow"], d);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3);
    assert!(out.lines().all(|l| file.lines().any(|f| f == l)), "{out}");
}

// 6. ---------------------------------------------------------------------

#[test]
fn a_rotated_series_verifies_oldest_first() {
    const REQUESTS: usize = 40;
    let origin = HttpOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let proxy = Proxy::start_at(d, &config("[audit]\nrotate_bytes = 4096\n"));
    for i in 0..REQUESTS {
        assert_eq!(get(proxy.addr, "web.test", origin.port(), &format!("/{i}")), 200);
    }
    let log = proxy.audit_path();
    assert!(proxy.stop().success());

    // `secureops-audit.jsonl` rotates to `secureops-audit.<n>.jsonl`.
    let rotated: Vec<PathBuf> = (1..)
        .map(|n| d.join(format!("secureops-audit.{n}.jsonl")))
        .take_while(|p| p.exists())
        .take(1000)
        .collect();
    assert!(rotated.len() >= 3, "expected a few rotations, got {}", rotated.len());
    let mut series: Vec<&Path> = rotated.iter().map(PathBuf::as_path).collect();
    series.push(&log);
    let mut entries = Vec::new();
    for file in &series {
        // Rotation happens before a group would pass the limit; only the
        // closing `stop` line may go over it.
        let lines = raw_lines(file);
        let body: usize = lines[..lines.len() - 1].iter().map(Vec::len).sum();
        assert!(body <= 4096, "{} holds {body} bytes before its stop", file.display());
        let part = read_entries(file);
        assert_eq!(part.first().unwrap()["kind"], "start", "{}", file.display());
        assert_eq!(part.last().unwrap()["kind"], "stop", "{}", file.display());
        entries.extend(part);
    }
    assert_eq!(count(&entries, "allow"), REQUESTS);
    assert_eq!(entries.len(), REQUESTS + 2 * series.len());
    assert_gap_free(&entries);

    let (code, out, err) = verify(&series, &[], d);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("ok {} entries\n", entries.len())), "{out}");
    // The series must be complete and in order.
    let second = failure(&verify(&series[1..], &[], d), series[1], 1);
    assert!(second.starts_with("sequence gap: expected seq 0,"), "{second}");
    let mut swapped = series.clone();
    swapped.swap(0, 1);
    let why = failure(&verify(&swapped, &[], d), series[1], 1);
    assert!(why.starts_with("lines reordered: expected seq 0,"), "{why}");
    let mut gap = series.clone();
    gap.remove(1);
    let why = failure(&verify(&gap, &[], d), series[2], 1);
    assert!(why.starts_with("sequence gap"), "{why}");
}

// 7. ---------------------------------------------------------------------

#[test]
fn a_log_cut_back_to_an_earlier_stop_fails_against_the_guards_anchor() {
    let origin = HttpOrigin::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two runs of the guard on one log: two stop entries, 5 lines each.
    for run in 0..2 {
        let proxy = Proxy::start_at(d, &config(""));
        for i in 0..3 {
            assert_eq!(get(proxy.addr, "web.test", origin.port(), &format!("/{run}/{i}")), 200);
        }
        assert!(proxy.stop().success());
    }
    let log = d.join("secureops-audit.jsonl");
    let original = raw_lines(&log);
    assert_eq!(original.len(), 10);
    assert!(String::from_utf8_lossy(&original[4]).contains("\"kind\":\"stop\""));

    // The guard keeps the anchor in its state folder, not beside the log.
    let anchors = support::state_home(d).join("secureops/anchors");
    let found: Vec<PathBuf> = std::fs::read_dir(&anchors)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let anchor_file = found[0].clone();
    assert_eq!(
        std::fs::metadata(&anchor_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let anchor: serde_json::Value = serde_json::from_slice(&std::fs::read(&anchor_file).unwrap()).unwrap();
    assert_eq!(anchor["seq"], 9, "{anchor}");
    let canonical = std::fs::canonicalize(&log).unwrap();
    assert_eq!(anchor["log"], canonical.to_str().unwrap(), "{anchor}");
    assert_eq!(anchor["fingerprint"], read_entries(&log)[0]["fingerprint"]);
    let (code, out, err) = verify(&[&log], &[], d);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok 10 entries\n"), "{out}");
    assert!(
        out.contains(&format!("anchor: seq 9 matches ({})", anchor_file.display())),
        "{out}"
    );

    // Cut back to the first run's stop: on its own, a complete log.
    let cut = d.join("cut.jsonl");
    write_lines(&cut, &original[..5]);
    let (code, out, err) = verify(&[&cut], &[], d);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "no anchor found for this log (a log cut back to an earlier stop cannot be told from a complete one)"
        ),
        "{out}"
    );
    let anchor_arg = anchor_file.to_str().unwrap();
    let result = verify(&[&cut], &["--anchor", anchor_arg], d);
    let why = failure(&result, &cut, 5);
    assert!(
        why.starts_with("log cut back: it ends at seq 4, but its anchor records entries up to seq 9"),
        "{why}"
    );
    assert!(
        result
            .1
            .contains(&format!("hint: the anchor {anchor_arg} records seq 9")),
        "{}",
        result.1
    );

    // The same cut in place: the anchor is found without being named.
    write_lines(&log, &original[..5]);
    let why = failure(&verify(&[&log], &[], d), &log, 5);
    assert!(why.starts_with("log cut back"), "{why}");
    let key_pub = d.join("secureops-audit.key.pub");
    let why = failure(&verify(&[&log], &["--pubkey", key_pub.to_str().unwrap()], d), &log, 5);
    assert!(why.starts_with("log cut back"), "{why}");

    // Nor does the next guard continue the cut log (that would move the
    // anchor on): it refuses to start and says why.
    let mut child = Command::new(support::bin())
        .args(["proxy", "-c"])
        .arg(d.join("secureops.toml"))
        .current_dir(d)
        .env("XDG_STATE_HOME", support::state_home(d))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("was cut back"), "{err}");
    assert_eq!(raw_lines(&log), original[..5]);

    // A log written anew under another key (which verifies on its own,
    // trusting the key it names) fails: the anchor pins the guard's key.
    let other = tempfile::tempdir().unwrap();
    let o = other.path();
    let (code, out, err) = run(&["keygen", "--out", "new.key"], o);
    assert_eq!(code, 0, "{out}{err}");
    let proxy = Proxy::start_at(o, &config("[audit]\nsigning_key = \"new.key\"\n"));
    assert!(proxy.stop().success());
    std::fs::copy(o.join("secureops-audit.jsonl"), &log).unwrap();
    assert_eq!(verify(&[&log], &["--anchor", "/nonexistent"], d).0, 2);
    let result = verify(&[&log], &[], d);
    let why = failure(&result, &log, 1);
    assert!(why.starts_with("wrong key"), "{why}");
    assert!(result.1.contains("was written anew under another key"), "{}", result.1);

    // A flipped byte in the anchor is a failure too.
    write_lines(&log, &original);
    assert_eq!(verify(&[&log], &[], d).0, 0);
    let mut bytes = std::fs::read(&anchor_file).unwrap();
    let at = bytes.windows(8).position(|w| w == b"\"head\":\"").unwrap() + 8;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&anchor_file, &bytes).unwrap();
    let (code, out, err) = verify(&[&log], &[], d);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("FAILED {}: bad anchor signature", anchor_file.display())),
        "{out}"
    );
}
